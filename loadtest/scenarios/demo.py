"""`make demo`'s scenario: voters and result watchers at once, one user class per frontend.

deploy/demo.yml routes `/vote...` (or Host vote.localhost) to `vote` and `/result...` (or Host
result.localhost) to `result`; each class targets its own service by path, so one --host serves both.
"""

from loadtest import HttpUser, constant, task


class Voter(HttpUser):
    """Many cheap requests: vote's replicas follow the number of voters."""

    weight = 3
    wait_time = constant(0)

    @task
    async def vote(self) -> None:
        await self.client.get(f"/vote/{int(self.random.random() * 2)}", name="/vote/[choice]")


class ResultWatcher(HttpUser):
    """Fewer, slow requests (WEB_LATENCY_MS 200 on result): few users, still several replicas."""

    weight = 1
    wait_time = constant(0)

    @task
    async def result(self) -> None:
        await self.client.get("/result/", name="/result/")
