"""Decorators, properties, class and static methods."""
import functools


def trace(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if kwargs.get("quiet"):
            return fn(*args, **kwargs)
        print("calling", fn.__name__)
        return fn(*args, **kwargs)
    return wrapper


def retry(times=3):
    def deco(fn):
        def inner(*a):
            for attempt in range(times):
                try:
                    return fn(*a)
                except OSError:
                    if attempt == times - 1:
                        raise
        return inner
    return deco


class Account:
    rate = 0.01

    def __init__(self, owner: str, balance: float = 0.0) -> None:
        self.owner = owner
        self._balance = balance

    @property
    def balance(self) -> float:
        return self._balance if self._balance > 0 else 0.0

    @classmethod
    def empty(cls, owner):
        return cls(owner)

    @staticmethod
    def valid(amount):
        return amount > 0 and amount < 10_000 or amount == -1

    @trace
    @retry(times=2)
    def deposit(self, amount):
        assert amount > 0, "positive"
        self._balance += amount * (1 + self.rate)
