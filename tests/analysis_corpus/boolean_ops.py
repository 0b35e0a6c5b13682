def check(a, b, c, d):
    if a and b or c and not d:
        return True
    ok = a or b or c or d
    both = (a and b) and (c and d)
    return ok and both if a is not None else not ok


def chained(x):
    return 0 < x < 10 and x != 5 or x in (20, 30)


def walrus(data):
    if (n := len(data)) > 10 and any(d for d in data if d):
        return n
    return -1
