"""Helpers shared by more than one test folder (JupyterHub's ``tests/utils.py`` and
``tests/mocking.py`` are the model).

A test folder imports its own modules and this package, never another folder's
``conftest.py`` or helper module (``tests/test_test_layout.py`` checks it); fixtures stay in
the ``conftest.py`` of the folder that uses them, or in ``tests/conftest.py`` when every
folder may. Modules here import nothing of ``tests`` outside this package.

- ``ci``: ``IN_CI``, and a missing service as a local skip but a CI failure.
- ``ports``: a free loopback port; waiting for a process to listen on one.
- ``waits``: polling until a condition holds (``wait_until``, ``until`` for coroutines).
- ``processes``: child processes (daphne as deployments launch it, ``streamspace-agent``).
- ``stack``: a running control plane plus agents on the test's database, for end-to-end tests.
- ``sentinel``: a real Redis master, replica and Sentinels on free ports; failover, killed master.
- ``postgres_cluster``, ``nginx``, ``topology``: a PostgreSQL cluster of a test's own, nginx
  with the compose config, and the whole production topology on them (replicas, Celery,
  agent replicas) for fault-injection tests (``tests/chaos/``).
- ``factories``, ``plugin_factories``, ``clients``: rows and authenticated API clients.
- ``fakes``, ``agent_client``, ``webhook_receiver``: test doubles on either side of the agent
  protocol and a webhook endpoint.
- ``docker``: the Docker engine fixtures and the test session image (a pytest plugin).
- ``api_matrix``: every API endpoint and the least role that may call it.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root (child processes run there, so ``-m tests....`` resolves)."""
