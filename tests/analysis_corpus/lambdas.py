# Lambdas and comprehensions; lambdas do not add complexity in radon's rules.
square = lambda n: n * n
pick = lambda a, b: a if a > b else b
table = {name: (lambda v, n=name: f"{n}={v}") for name in ["x", "y"] if name}
matrix = [[i * j for j in range(5) if j] for i in range(5) if i % 2]
flat = {c for row in matrix for c in row if c > 3 and c < 20}
gen = sum(x for x in range(100) if x % 3 == 0 or x % 5 == 0)


def keyed(items):
    return sorted(items, key=lambda item: (item[1], -item[0]) if item else (0, 0))
