"""Celery's Redis transport, made to survive Redis going away (CELERY_BROKER_TRANSPORT in config/settings.py).

When the broker connection breaks, Celery's consumer closes it and connects again; but the channel of the
old connection is still used afterwards: closing it puts its unacknowledged messages back, and a task that
ends meanwhile acknowledges its message through it. With kombu 5.7 both go through the old transport, whose
client is gone by then: AttributeError, which Celery treats as unrecoverable, and the worker exits.
Measured in the fault suite (python -m chaos, scenario 3): every inference worker died when Redis restarted,
and no reply ran again until they were started by hand.

Nothing needs doing through a dead connection: its unacknowledged messages stay in Redis' unacked set, from
which the visibility timeout (DJINN_BROKER_VISIBILITY_TIMEOUT_S) brings them back to whichever worker is
there, and every task is idempotent (a finished reply delivered again does nothing). So the QoS of a channel
whose connection is gone leaves them there instead of failing. This subclasses kombu's Redis QoS (a transport
class named by ``broker_transport`` is kombu's documented extension point) and relies on its ``ack``,
``reject`` and ``restore_unacked`` and on the channel's ``connection`` (or its ``client``) being None once
released; the fault suite's scenario 3 restarts Redis under real workers and fails if they die.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis

logger = logging.getLogger(__name__)


class QoS(redis.QoS):
    def _connection_gone(self, what: str) -> bool:
        connection = self.channel.connection
        if connection is not None and connection.client is not None:
            return False
        logger.warning("The broker connection is gone: not %s now; the visibility timeout brings them back", what)
        return True

    def ack(self, delivery_tag: Any) -> None:
        if not self._connection_gone("acknowledging a message"):
            super().ack(delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if not self._connection_gone("rejecting a message"):
            super().reject(delivery_tag, requeue=requeue)

    def restore_unacked(self, client: Any = None) -> Any:
        if self._connection_gone(f"restoring {len(self._delivered)} unacknowledged messages"):
            return None
        return super().restore_unacked(client)


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel
