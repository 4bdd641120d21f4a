"""The tests' webhook receiver: devstack/webhook_receiver.py (`make dr-drill` uses it too)."""

from devstack.webhook_receiver import Received, Receiver, Reply, running_receiver, self_signed

__all__ = ["Received", "Receiver", "Reply", "running_receiver", "self_signed"]
