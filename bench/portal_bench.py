"""Portal page render times with 1,000 sessions and 100 templates in the database.

    .venv/bin/python bench/portal_bench.py [--requests 30]

Daphne on PostgreSQL + Redis (DEBUG off), pinned to CPU 0; one sequential client on CPU 1
with an admin's session cookie (the admin sees every operator page). Each page is fetched
a few times to warm up, then ``--requests`` times; the goal is p95 under 200 ms a page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import httpx
from common import bench_env, daphne, manage_shell, reset_database

DATABASE = "streamspace_portal_bench"
GOAL_MS = 200.0

SETUP = """
import random
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone
from agents_app.models import Agent, AgentInstance
from agents_app.tokens import hash_token
from plugins_app.models import Plugin, WebhookDelivery
from sessions_app.models import GroupQuota, Session, SessionState, Template, UserQuota
from streamspace.accounts.models import User
from streamspace.audit.models import AuditEvent

random.seed(7)
admin = User.objects.create_user('bench-admin', password='bench-password', role='admin')
UserQuota.objects.create(user=admin, max_sessions=10**6, max_cpu_millicores=10**9, max_memory_mb=10**9)
groups = [Group.objects.create(name=f'team-{i}') for i in range(5)]
for group in groups:
    GroupQuota.objects.create(group=group, max_sessions=10)
users = [admin] + User.objects.bulk_create(
    User(username=f'user{i}', email=f'user{i}@example.com', password='!') for i in range(99))
User.groups.through.objects.bulk_create(
    User.groups.through(user_id=user.pk, group_id=groups[i % 5].pk) for i, user in enumerate(users[1:]))
templates = Template.objects.bulk_create(
    Template(slug=f'app-{i}', display_name=f'Application {i}', description='A benchmark template ' * 4,
             category=f'Category {i % 8}', icon='📦', image='registry.local/app:1') for i in range(100))
now = timezone.now()
agents = []
for a in range(3):
    agent = Agent.objects.create(agent_id=f'docker-{a}', platform='docker', token_hash=hash_token(f't{a}'))
    for r in range(3):
        AgentInstance.objects.create(agent=agent, instance_id=f'docker-{a}-{r}', pod=f'cp-{r}', is_leader=r == 0,
                                     connected=True, last_heartbeat=now, hostname=f'host-{a}-{r}')
    agents.append(agent)
states = list(SessionState.values)
Session.objects.bulk_create(
    Session(name=f'session {i}', user=admin if i < 100 else random.choice(users), template=random.choice(templates),
            state='running' if i < 100 else random.choice(states), platform='docker', agent=random.choice(agents),
            cpu_millicores=500, memory_mb=512, idle_timeout_s=1800, last_activity=now, state_changed_at=now)
    for i in range(1000))
AuditEvent.objects.bulk_create(
    AuditEvent(action=random.choice(['session.create', 'session.stop', 'quota.change']), actor=admin,
               actor_repr='bench-admin', target_type='session', target_id=str(i)) for i in range(5000))
plugin = Plugin.objects.create(name='hook', type='webhook', events=['session.created'])
WebhookDelivery.objects.bulk_create(WebhookDelivery(plugin=plugin, event='session.created', status='succeeded',
                                                    response_code=200, latency_ms=12) for _ in range(2000))
store = SessionStore()
store[SESSION_KEY] = str(admin.pk)
store[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'
store[HASH_SESSION_KEY] = admin.get_session_auth_hash()
store.create()
running = Session.objects.filter(user=admin, state='running').values_list('pk', flat=True).first()
print(store.session_key, running)
"""

PAGES = [
    "/",
    "/?q=Application+4&category=Category+4",
    "/sessions/",
    "/sessions/?history=1",
    "/sessions/{session}/",
    "/sessions/{session}/view",
    "/ops/",
    "/ops/agents/",
    "/ops/sessions/",
    "/ops/sessions/?state=running&page=2",
    "/ops/users/",
    "/ops/templates/",
    "/ops/templates/app-1",
    "/ops/plugins/",
    "/ops/audit/",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    env = bench_env(DATABASE, redis_db=13)
    reset_database(env, DATABASE)
    session_key, session_id = manage_shell(env, SETUP).split()[-2:]
    os.sched_setaffinity(0, {1})
    worst = 0.0
    with daphne(env, cpu=0) as (base, _proc), httpx.Client(base_url=base, timeout=30) as client:
        client.headers["Cookie"] = f"sessionid={session_key}"
        print(f"{'page':<42} {'p50':>8} {'p95':>8} {'max':>8}")
        for template in PAGES:
            path = template.format(session=session_id)
            for _ in range(3):
                assert client.get(path).status_code == 200, path
            latencies = []
            for _ in range(args.requests):
                start = time.perf_counter()
                response = client.get(path)
                latencies.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, (path, response.status_code)
            latencies.sort()
            p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
            worst = max(worst, p95)
            print(f"{path[:42]:<42} {statistics.median(latencies):6.1f}ms {p95:6.1f}ms {latencies[-1]:6.1f}ms")
    verdict = "OK" if worst < GOAL_MS else "OVER BUDGET"
    print(f"worst p95 {worst:.1f} ms (goal < {GOAL_MS:.0f} ms): {verdict}")
    # On a shared 2-core machine other work inflates these numbers; report it with them.
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
