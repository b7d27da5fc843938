"""The agent hub: where agents' WebSockets end on the control plane.

- :mod:`.consumer` — the Channels consumer at ``/api/v1/agents/connect`` (one per agent
  instance): parses frames, answers errors, keeps presence fresh;
- :mod:`.rows` — what each frame does to the database rows (instances, commands);
- :mod:`.presence` — which instances are connected to which replica, in Redis;
- :mod:`.batch` — the connections' registrations, registry writes and heartbeats that
  queue up together (a reconnect herd) done in one call.
"""
