def describe(command):
    match command.split():
        case ["go", direction]:
            return f"going {direction}"
        case ["look"]:
            return "looking"
        case ["take", *items] if items:
            return ", ".join(items)
        case _:
            return "unknown"


def shape(point):
    match point:
        case (0, 0):
            return "origin"
        case (x, 0) | (0, x):
            return f"axis {x}"
        case {"x": x, "y": y}:
            return f"dict {x} {y}"


def only_default(value):
    match value:
        case _:
            return value
