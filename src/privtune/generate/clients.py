"""The teacher's two routes, chat (/chat/completions) and text (/completions), behind one object.

Both go through clients the endpoint made or checked (its privacy guard runs first), and both report
each request to the egress log before it leaves. The text route is what Magpie needs: the chat
template's pre-query text sent as is, so the model writes the user's turn itself.
"""

from __future__ import annotations

from privtune.endpoint import Endpoint
from privtune.lean_client import LeanChatClient


class LeanTextClient(LeanChatClient):
    """privtune's lean client on the text route: same retries, errors and egress hook; the answer is an
    `openai.types.Completion`, as `AsyncOpenAI(...).completions.create` returns it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.url = self.url.removesuffix("/chat/completions") + "/completions"

    def _response_model(self):
        from openai.types import Completion

        return Completion, "a text completion"


class Clients:
    """`await chat(**params)` and `await complete(**params)` on one teacher; `close()` both."""

    def __init__(self, endpoint: Endpoint, concurrency: int, lean: bool, on_send=None):
        self.endpoint, self.concurrency, self.lean, self.on_send = endpoint, concurrency, lean, on_send
        self.client = endpoint.async_client(concurrency, lean=lean, on_send=on_send)  # checks the host first
        self._text: LeanTextClient | None = None

    async def chat(self, **params):
        create = self.client.create if self.lean else self.client.chat.completions.create
        return await create(**params)

    async def complete(self, **params):
        if not self.lean:
            return await self.client.completions.create(**params)
        if self._text is None:
            self.endpoint.check()
            self._text = LeanTextClient(self.endpoint.base_url, self.endpoint.api_key(),
                                        timeout=self.endpoint.timeout, max_retries=self.endpoint.max_retries,
                                        concurrency=self.concurrency, on_send=self.on_send)
        return await self._text.create(**params)

    async def close(self) -> None:
        await self.client.close()
        if self._text is not None:
            await self._text.close()
