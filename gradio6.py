"""What the app changes in Gradio's own behaviour, for Gradio 6 (requirements.txt: gradio>=6.20,<7): each override
reaches into Gradio internals that may change in another major version, so they are all here, in one place.

- Studio.preprocess_data: an API call one or more inputs short (an older client) is answered, or told what it lacks.
- Studio.queue / admit: an event's calls are put to a check before they join the queue (the Train tab's limits).
- serialized: a handler's values converted to the outputs' wire format itself, for postprocess=False (one pass).
- build_session_configs_lazily: a new session's copy of every component's config is built when first read."""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import SimpleNamespace

import gradio as gr

from vae.visitors import client_address


def serialized(handler: Callable, outputs: list[gr.components.Component]) -> Callable:
    """The handler, returning its values in the outputs' wire format, for an event with postprocess=False.

    With postprocess on, Gradio converts the outputs and checks the path of every returned file twice (once for
    the session's copy of the page, once for the reply); converted here, one pass is left. For /sample (65 files
    for 64 images) that is a third of its time: 26-28 ms on the server instead of 38-56 ms (bench/app_startup.py,
    three alternating runs of 60 calls each, Gradio 6.31, a busy 2-core machine).
    """

    @functools.wraps(handler)  # keeps the signature: the API's parameter names
    def run(*args):
        return [output.postprocess(value).model_dump() for output, value in zip(outputs, handler(*args), strict=True)]

    return run


class LazyConfigs(dict):
    """A session's config of each block (SessionState.config_values), built the first time it is read; items() (the
    deep-link route's read) builds them all, in the page's order."""

    def __init__(self, blocks_config, keys):
        super().__init__()
        self.blocks_config, self.keys_in_order = blocks_config, list(keys)

    def __missing__(self, key):
        value = self[key] = self.blocks_config.config_for_block(key, [], self.blocks_config.blocks[key])
        return value

    def __contains__(self, key) -> bool:  # "has it a config": every block of the page has one, built or not yet
        return key in self.keys_in_order or super().__contains__(key)

    def items(self):
        for key in self.keys_in_order:
            self[key]  # noqa: B018 (built if missing)
        return super().items()


def build_session_configs_lazily() -> None:
    """Every new session (each raw API call and each gradio_client is one) made Gradio build a copy of the config of
    every block of the page at once, to save the session as a deep link should one be asked for: 11-12 ms of the
    server's 21-23 ms of CPU for a refused /sample, on this page (python -m bench.api_call_cost). Built when first
    read, the studio (which has no deep-link button) builds none for a call; /gradio_api/deep_link still gets them
    all. Idempotent; changes Gradio's SessionState for the whole process."""
    from gradio import state_holder

    session = state_holder.SessionState
    if getattr(session, "lazy_configs", False):
        return
    eager = session.__init__

    def __init__(self, blocks) -> None:
        eager(self, SimpleNamespace(default_config=blocks.default_config, blocks={}))  # builds no config
        self.config_values = LazyConfigs(
            self.blocks_config, [k for k in self.blocks_config.blocks if k in blocks.blocks]
        )

    session.__init__ = __init__
    session.lazy_configs = True


IDLE_POLL_SECONDS = (0.005, 0.05)  # how often an idle queue looks for a call to start, and for progress to send


class Studio(gr.Blocks):
    """gr.Blocks that answers API calls made before an event gained its newest inputs. gradio_client fills in a
    left-out input with its default itself; Gradio's plain HTTP route (POST /call/NAME {"data": [...]}) refuses a
    call one input short. Here the last LATER_INPUTS[api_name] inputs may be left out: they reach the handler as
    None, which it reads as the default ("any" class for /sample). A call short of more is answered with a message
    that lists the inputs (Gradio's own ValueError reached the caller as an error with no message: "null")."""

    LATER_INPUTS = {"sample": 1}  # /sample's class_name

    def __init__(self, *args, **kwargs):
        build_session_configs_lazily()
        super().__init__(*args, **kwargs)
        self.admissions: dict[str, Callable[[list[tuple[str, str]], tuple[str, str]], str | None]] = {}
        self.entering: dict[str, list[tuple[str, str]]] = {}  # calls admitted, not yet in the queue

    def admit(self, api_name: str, refusal: Callable[[list[tuple[str, str]], tuple[str, str]], str | None]) -> None:
        """Put each call of the event `api_name` to refusal(calls going or waiting, caller), each call a (session,
        client address), before it joins the queue: a message refuses it at once. (Gradio's queue has one max_size
        for all events' waiting calls together, and an event's validator runs too late to count the calls
        reliably: it awaits before the call joins the queue.) A page shows the message as the app's other errors (a
        validation error would pin it over the event's first input, the Dataset choice); gradio_client raises it as a
        ValidationError (a plain error would reach it as "400 Bad Request", without the message)."""
        self.admissions[api_name] = refusal

    def queue(self, *args, **kwargs):
        super().queue(*args, **kwargs)
        # Gradio's queue looks for work every 1 ms while it has none, and for progress every 10 ms: 3.5-4.4 % of a
        # core for a server that does nothing (a Space's two vCPUs, a test suite's many servers). Every 5 and 50 ms:
        # 1.4 %, the rest being the server's own; a call waits at most 5 ms longer to start.
        self._queue.sleep_when_free, self._queue.progress_update_sleep_when_free = IDLE_POLL_SECONDS
        push = self._queue.push

        async def push_admitted(body, request, username):
            fn = self.fns.get(body.fn_index) if body.fn_index is not None else None
            refusal = self.admissions.get(fn.api_name) if fn is not None else None
            if refusal is None:
                return await push(body, request, username)
            caller = (body.session_hash or "", caller_address(request))
            entering = self.entering.setdefault(fn.api_name, [])
            # Checked and counted with no await between: two calls at once cannot both take the last place.
            if message := refusal([*self.calls(fn.api_name), *entering], caller):
                if request.headers.get("x-gradio-user") == "api":  # gradio_client: a ValidationError with the message
                    refused = {"__type__": "validate", "is_valid": False, "message": message, "parameter_name": "Train"}
                    return False, [refused], "validator_error"
                return False, message, "error"  # a page: shown as the app's other errors are, not on the first input
            entering.append(caller)
            try:
                return await push(body, request, username)
            finally:
                entering.remove(caller)

        self._queue.push = push_admitted
        return self

    def calls(self, api_name: str) -> list[tuple[str, str]]:
        """The calls of the event `api_name` waiting in the queue or running, each as (session, client address)."""
        queue = self._queue
        waiting = [event for events in queue.event_queue_per_concurrency_id.values() for event in events.queue]
        running = [event for job in queue.active_jobs if job for event in job]
        return [(e.session_hash, caller_address(e.request)) for e in waiting + running if e.fn.api_name == api_name]

    async def preprocess_data(self, block_fn, inputs, state, explicit_call=False):
        missing = len(block_fn.inputs) - len(inputs)
        if 0 < missing <= self.LATER_INPUTS.get(block_fn.api_name, 0):
            inputs = [*inputs, *[None] * missing]
        elif missing > 0:
            count = len(block_fn.inputs)
            names = ", ".join(getattr(c, "label", None) or type(c).__name__ for c in block_fn.inputs)
            raise gr.Error(
                f"/{block_fn.api_name} takes {count} input{'s' * (count != 1)} ({names}), got {len(inputs)}.",
                print_exception=False,
            )
        return await super().preprocess_data(block_fn, inputs, state, explicit_call)


def caller_address(request) -> str:
    """A queued call's client address (vae.visitors.client_address) from its HTTP request."""
    if request is None:
        return "unknown"
    return client_address(request.headers, request.client.host if request.client else None)
