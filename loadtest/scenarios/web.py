"""The default scenario (used when no -f is given): a visitor browsing the example web service.

loadtest/locustfile.py runs the same scenario under real locust.
"""

from loadtest import HttpUser, constant, task


class WebUser(HttpUser):
    # No think time: the load is set by the number of users, so replicas track concurrency.
    wait_time = constant(0)

    @task(4)
    async def index(self) -> None:
        await self.client.get("/")

    @task(1)
    async def item(self) -> None:
        # Many URLs, one stats row: name= groups them as in locust.
        await self.client.get(f"/item/{int(self.random.random() * 1000)}", name="/item/[id]")
