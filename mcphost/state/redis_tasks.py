"""Task records shared by every replica, in Redis: a task created on one replica is polled,
answered, cancelled and collected through any other, and outlives the replica that ran it.

Keys (under ``[state] key_prefix``):

- ``task:<task id>``: a hash of the record's ``version`` and the record (JSON), expiring
  when the record does (Redis forgets it; nothing sweeps);
- ``task-owner:<process id>``: a process's lease, expiring unless renewed.

While Redis is unavailable every method raises
:class:`~mcphost.state.sessions.StoreUnavailable`: no task is created then (the call is
answered inline), and polls get an internal error rather than a misleading "not found".
"""

from __future__ import annotations

from typing import Any

from coredis.commands import Script

from mcphost.state.redis_state import RedisState, StateUnavailable
from mcphost.state.sessions import StoreUnavailable
from mcphost.state.tasks import TaskRecord

# Write a record with its version and expiry in one step.
_CREATE: Script[bytes] = Script(
    script="""
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'r', ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
"""
)

# Compare-and-set on the version: a record that changed (or went) since it was read stays.
_SWAP: Script[bytes] = Script(
    script="""
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'r', ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
"""
)


class RedisTaskStore:
    """:class:`~mcphost.state.tasks.TaskStore` in Redis."""

    def __init__(self, state: RedisState):
        self.state = state

    async def _call(self, command: Any) -> Any:
        try:
            return await self.state.call(command)
        except StateUnavailable as error:
            raise StoreUnavailable(str(error)) from None

    def _args(self, record: TaskRecord) -> list[str | int | float]:
        return [record.dumps(), record.version, int(record.expires * 1000)]

    async def create(self, record: TaskRecord) -> None:
        """Write a new record."""
        key = self.state.key("task", record.id)
        await self._call(lambda client: _CREATE(keys=[key], args=self._args(record), client=client))

    async def get(self, task_id: str) -> TaskRecord | None:
        """The record, or ``None`` once Redis forgot it."""
        value = await self._call(lambda client: client.hget(self.state.key("task", task_id), "r"))
        return None if value is None else TaskRecord.loads(value)

    async def swap(self, record: TaskRecord, version: int) -> bool:
        """Replace the record if its version is still ``version``."""
        key = self.state.key("task", record.id)
        args = [*self._args(record), version]
        return bool(await self._call(lambda client: _SWAP(keys=[key], args=args, client=client)))

    async def heartbeat(self, owner: str, until: float) -> None:
        """Renew ``owner``'s lease (Redis expires it at ``until``)."""
        key = self.state.key("task-owner", owner)
        await self._call(lambda client: client.set(key, "1", pxat=int(until * 1000)))

    async def alive(self, owner: str) -> bool:
        """Whether ``owner``'s lease runs."""
        return bool(await self._call(lambda client: client.exists([self.state.key("task-owner", owner)])))

    async def release(self, owner: str) -> None:
        """End ``owner``'s lease."""
        await self._call(lambda client: client.delete([self.state.key("task-owner", owner)]))

    async def expire(self, now: float) -> int:
        """Nothing to do: Redis expires records itself."""
        return 0
