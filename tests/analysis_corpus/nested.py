def outer(x):
    def middle(y):
        def inner(z):
            return z if z else -z
        while y > 0:
            y -= 1
        else:
            y = inner(y)
        return y
    class Local:
        def method(self):
            return [i for i in range(x) if i % 2 if i % 3]

        class Deeper:
            def deep(self):
                return {k: v for k, v in zip("ab", "cd")}
    return middle(x), Local


class Outer:
    class Inner:
        def a(self):
            if self:
                return 1
            elif not self:
                return 2
            return 3

    def b(self):
        def helper():
            return (n for n in range(3) if n)
        return helper
