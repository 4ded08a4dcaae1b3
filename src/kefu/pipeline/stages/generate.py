"""Ask the chat model for the reply, streaming it to the customer when the channel streams."""

from __future__ import annotations

from kefu.llm.base import close_stream
from kefu.llm.types import GenerationOptions, StreamDone, TextDelta
from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps


class GenerateReply:
    """Fills `ctx.reply` from the chat-role LLM; model and token usage are recorded on the turn."""

    name = "generate"

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        llm = deps.llm("chat")
        ctx.model = llm.model
        ctx.route = ctx.route or "llm"
        options = GenerationOptions()
        if not ctx.events.streaming:
            completion = await llm.complete(ctx.prompt, options)
            ctx.reply, ctx.usage, ctx.model = completion.text.strip(), completion.usage, completion.model
            return
        parts: list[str] = []
        events = llm.stream(ctx.prompt, options)
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    # Keep what was streamed on the context, so a failure mid-stream still records it.
                    parts.append(event.text)
                    ctx.reply = "".join(parts)
                    await ctx.events.delta(event.text)
                elif isinstance(event, StreamDone):
                    ctx.usage, ctx.model = event.completion.usage, event.completion.model
                    ctx.reply = event.completion.text.strip() or "".join(parts).strip()
        finally:
            await close_stream(events)  # a customer who left cancels this task mid-stream: end the request now
