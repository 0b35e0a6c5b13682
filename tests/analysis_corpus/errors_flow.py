import json


def load(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from exc
    else:
        pass
    finally:
        print("done")


def nested_try(values):
    total = 0
    for v in values:
        try:
            total += int(v)
        except ValueError:
            try:
                total += float(v)
            except ValueError:
                continue
    return total


def star(group):
    try:
        raise ExceptionGroup("eg", group)
    except* ValueError:
        return 1
    except* TypeError:
        return 2
