"""coterie's actor runtime: supervised pykka actors with `become`, paths, and
location-transparent refs over ZeroMQ.

The public face is small; everything else is an implementation module::

    from actors import ActorSystem, Actor, Props, message, UNHANDLED

    @message("demo.greet")
    class Greet:
        name: str

    class Greeter(Actor):
        def receive(self, msg, sender):
            match msg:
                case Greet(name):
                    return f"hello {name}"
            return UNHANDLED

    with ActorSystem("demo", host="127.0.0.1") as system:
        greeter = system.spawn(Greeter, "greeter")
        print(greeter.ask(Greet("ada")).result())
"""

from actors.actor import UNHANDLED, Actor, Context, Props, Reply
from actors.errors import (
    ActorError,
    ActorFailed,
    ActorNameTaken,
    ActorNotFound,
    ActorStopped,
    AskError,
    AskTimeout,
    Undeliverable,
    UnhandledMessage,
)
from actors.log import configure_logging
from actors.paths import ActorPath, Address, InvalidActorPath
from actors.ref import ActorRef, AskFuture
from actors.security import CurveConfig, KeyFileError
from actors.supervision import Directive, OneForOne
from actors.system import ActorSystem
from actors.transport import TransportConfig
from actors.wire import FrameError, message

__all__ = [
    "UNHANDLED",
    "Actor",
    "ActorError",
    "ActorFailed",
    "ActorNameTaken",
    "ActorNotFound",
    "ActorPath",
    "ActorRef",
    "ActorStopped",
    "ActorSystem",
    "Address",
    "AskError",
    "AskFuture",
    "AskTimeout",
    "Context",
    "CurveConfig",
    "Directive",
    "FrameError",
    "InvalidActorPath",
    "KeyFileError",
    "OneForOne",
    "Props",
    "Reply",
    "TransportConfig",
    "Undeliverable",
    "UnhandledMessage",
    "configure_logging",
    "message",
]
