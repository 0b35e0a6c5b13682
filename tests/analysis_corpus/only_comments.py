# just comments
# nothing else

# really
