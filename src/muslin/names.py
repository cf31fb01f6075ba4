"""Identifiers and generated names, shaped like Docker's."""

import os
import random

_LEFT = ("admiring", "bold", "brave", "busy", "clever", "eager", "elegant", "focused", "gallant", "happy",
         "jolly", "keen", "lucid", "modest", "nifty", "quirky", "serene", "sharp", "stoic", "vibrant")
_RIGHT = ("agnesi", "babbage", "cerf", "curie", "dijkstra", "engelbart", "feistel", "hopper", "kahn",
          "knuth", "lamport", "liskov", "metcalfe", "perlman", "postel", "ritchie", "shannon", "thompson",
          "torvalds", "wozniak")


def new_id() -> str:
    """64 hex digits, like a Docker object ID."""
    return os.urandom(32).hex()


def container_name(taken) -> str:
    while True:
        name = f"{random.choice(_LEFT)}_{random.choice(_RIGHT)}"
        if name not in taken:
            return name
        name = f"{name}{random.randint(0, 9)}"
        if name not in taken:
            return name
