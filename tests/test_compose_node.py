"""`zoom_refine_node`: a registered graph as one node of a parent graph with its own state keys."""

from __future__ import annotations

import asyncio
import operator
from pathlib import Path
from typing import Annotated, Any

import pytest
from compose_fixtures import RED, finds_red, write_photo
from langchain_core.callbacks import BaseCallbackHandler
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict

from zoom_refine import (
    InvalidInputError,
    ZoomContext,
    pending_boxes,
    replace_box,
    zoom_refine_node,
)
from zoom_refine.testing import RuleVisionModel, ScriptedVisionModel

KEYS = {"image": "photo_path", "question": "user_question", "options": "choices"}
OUTS = {"answer": "verdict", "confidence": "certainty", "views": "crops"}


class TicketState(TypedDict, total=False):
    """A parent graph's state: none of its keys is one of the Zoom-Refine graph's."""

    photo_path: str
    user_question: str
    choices: list[str]
    verdict: str | None
    certainty: float | None
    crops: Annotated[list[dict[str, Any]], operator.add]
    reply: str


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return write_photo(tmp_path)


def scripted() -> ScriptedVisionModel:
    return finds_red(confidence=0.8)


def write_reply(state: TicketState) -> dict[str, Any]:
    return {"reply": f"verdict {state.get('verdict')}, {len(state.get('crops', []))} views"}


def parent(node: Any, **compile_options: Any) -> Any:
    builder = StateGraph(TicketState, context_schema=ZoomContext)
    builder.add_node("zoom", node)
    builder.add_node("reply", write_reply)
    builder.add_edge(START, "zoom")
    builder.add_edge("zoom", "reply")
    return builder.compile(**compile_options)


def ticket(photo: Path) -> TicketState:
    return {
        "photo_path": str(photo),
        "user_question": "What colour is the square?",
        "choices": ["red", "blue"],
    }


def test_parent_keys_map_in_and_out(photo: Path) -> None:
    model = scripted()
    app = parent(zoom_refine_node(inputs=KEYS, outputs=OUTS))
    out = app.invoke(ticket(photo), context=ZoomContext(model=model))
    assert out["verdict"] == "A" and out["certainty"] == 0.8
    assert [view["id"] for view in out["crops"]] == ["img0", "img1"]
    box = out["crops"][1]["box"]  # the crop covers the red square, in original pixels
    assert box[0] <= RED[0] and box[2] >= RED[2] and box[1] <= RED[1] and box[3] >= RED[3]
    assert out["reply"] == "verdict A, 2 views"
    # the graph saw the parent's question and choices
    assert "What colour is the square?" in str(model.requests[0][-1].content)
    assert "blue" in str(model.requests[0][-1].content)
    # nothing of the graph's own keys leaked into the parent's state
    assert not {"answer", "steps", "messages", "image"} & set(out)


def test_async_parent_runs_the_async_path(photo: Path) -> None:
    app = parent(zoom_refine_node(inputs=KEYS, outputs=OUTS))
    out = asyncio.run(app.ainvoke(ticket(photo), context=ZoomContext(model=scripted())))
    assert out["verdict"] == "A" and len(out["crops"]) == 2


def test_given_context_wins_over_the_parents(photo: Path) -> None:
    mine = ZoomContext(model=scripted())
    parents = ZoomContext(model=ScriptedVisionModel(replies=[]))  # would fail if called
    app = parent(zoom_refine_node(inputs=KEYS, outputs=OUTS, context=mine))
    assert app.invoke(ticket(photo), context=parents)["verdict"] == "A"


def test_a_parent_context_of_another_type_is_not_passed_on(photo: Path) -> None:
    builder = StateGraph(TicketState, context_schema=dict)
    node = zoom_refine_node(inputs=KEYS, outputs=OUTS, context=ZoomContext(model=scripted()))
    builder.add_node("zoom", node)
    builder.add_edge(START, "zoom")
    out = builder.compile().invoke(ticket(photo), context={"user": "ana"})
    assert out["verdict"] == "A"


@pytest.mark.parametrize("graph", ["baseline", "agent"])
def test_any_registered_graph(photo: Path, graph: str) -> None:
    model = RuleVisionModel(direct="Answer: B")
    node = zoom_refine_node(inputs=KEYS, outputs={"answer": "verdict", "stop_reason": "reply"},
                            graph=graph)  # fmt: skip
    out = parent(node).invoke(ticket(photo), context=ZoomContext(model=model))
    assert out["verdict"] == "B"
    assert out["reply"].startswith("verdict B")  # write_reply ran after the node


def test_stream_with_subgraphs_shows_the_inner_nodes(photo: Path) -> None:
    app = parent(zoom_refine_node(inputs=KEYS, outputs=OUTS))
    events = list(app.stream(ticket(photo), context=ZoomContext(model=scripted()), subgraphs=True))
    inner = [next(iter(update)) for namespace, update in events if namespace]
    outer = [next(iter(update)) for namespace, update in events if not namespace]
    assert inner == ["localize", "crop", "refine"]
    assert outer == ["zoom", "reply"]
    assert all(ns[0].startswith("zoom:") for ns, _ in events if ns)


def test_parent_callbacks_see_the_inner_model_calls(photo: Path) -> None:
    class Seen(BaseCallbackHandler):
        def __init__(self) -> None:
            self.chains: list[str] = []
            self.model_calls = 0

        def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
            self.chains.append(str(kwargs.get("name")))

        def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
            self.model_calls += 1

    seen = Seen()
    app = parent(zoom_refine_node(inputs=KEYS, outputs=OUTS))
    app.invoke(ticket(photo), {"callbacks": [seen]}, context=ZoomContext(model=scripted()))
    assert seen.model_calls == 2
    assert {"localize", "crop", "refine"} <= set(seen.chains)


def test_parent_checkpointer_pauses_inside_and_resumes(photo: Path) -> None:
    """The node's graph compiled with `interrupt_before=["crop"]` pauses the parent's run (its
    checkpoints go to the parent's saver); the box is edited through the parent and the parent
    resumes: the crop follows the edited box."""
    node = zoom_refine_node(inputs=KEYS, outputs=OUTS, interrupt_before=["crop"])
    app = parent(node, checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}
    context = ZoomContext(model=scripted(), padding=0.0, min_crop_side=0)
    app.invoke(ticket(photo), config, context=context)
    paused = app.get_state(config, subgraphs=True)
    assert paused.next == ("zoom",)
    inner = paused.tasks[0].state
    [pending] = pending_boxes(inner)
    assert pending.box == [1200.0, 600.0, 1400.0, 800.0]
    replace_box(app, inner.config, [100, 100, 300, 200])
    out = app.invoke(None, config, context=context)
    assert out["crops"][1]["box"] == [100, 100, 300, 200]
    assert out["verdict"] == "A"


def test_defaults_use_the_graphs_own_names(photo: Path) -> None:
    class Plain(TypedDict, total=False):
        image: str
        question: str
        answer: str | None
        confidence: float | None

    builder = StateGraph(Plain)
    builder.add_node("zoom", zoom_refine_node(context=ZoomContext(model=scripted())))
    builder.add_edge(START, "zoom")
    out = builder.compile().invoke({"image": str(photo), "question": "Colour?"})
    assert out["answer"] == "A" and out["confidence"] == 0.8


@pytest.mark.reliability(
    "Composing",
    "a parent state without the key `inputs=` maps the image to",
    "one InvalidInputError naming the parent's key and the inputs= mapping, not a KeyError",
)
def test_missing_parent_key_names_it_and_the_mapping(photo: Path) -> None:
    app = parent(zoom_refine_node(inputs=KEYS, outputs=OUTS))
    state = ticket(photo)
    del state["photo_path"]
    with pytest.raises(InvalidInputError) as caught:
        app.invoke(state, context=ZoomContext(model=scripted()))
    message = str(caught.value)
    assert "'photo_path'" in message and "inputs=" in message and "'image'" in message
    assert "\n" not in message


@pytest.mark.reliability(
    "Composing",
    "parent keys holding None, a number, a dict where a path, a text or options belong",
    "one InvalidInputError naming the parent's key and the type it holds; the model never runs",
)
@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("photo_path", None, "has no 'photo_path'"),
        ("photo_path", 42, "'photo_path' holds a value of type int"),
        ("user_question", {"q": 1}, "'user_question' holds a value of type dict"),
        ("user_question", None, "has no 'user_question'"),
        ("choices", "red,blue", "'choices' holds a value of type str"),
    ],
)
def test_hostile_parent_values(photo: Path, key: str, value: Any, words: str) -> None:
    model = ScriptedVisionModel(replies=[])
    builder = StateGraph(dict)  # an untyped parent: any value reaches the node
    builder.add_node("zoom", zoom_refine_node(inputs=KEYS, context=ZoomContext(model=model)))
    builder.add_edge(START, "zoom")
    state: dict[str, Any] = {**ticket(photo), key: value}
    with pytest.raises(InvalidInputError, match=words):
        builder.compile().invoke(state)
    assert model.requests == []


def test_missing_optional_choices_mean_an_open_question(photo: Path) -> None:
    model = ScriptedVisionModel(replies=["It is red. Bounding box: [0.75, 0.6, 0.875, 0.8]",
                                         "Rechecked Answer: red\nConfidence: 0.9"])  # fmt: skip
    app = parent(zoom_refine_node(inputs=KEYS, outputs=OUTS))
    state = ticket(photo)
    del state["choices"]
    out = app.invoke(state, context=ZoomContext(model=model))
    assert "blue" not in str(model.requests[0][-1].content)
    assert len(out["crops"]) == 2


@pytest.mark.reliability(
    "Composing",
    "inputs=/outputs= naming keys the graph does not have, no image mapping, unknown graph",
    "InvalidInputError when the node is made, listing the valid keys or graphs",
)
@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"inputs": {"picture": "photo_path", "question": "q"}}, "not one of the graph's inputs"),
        ({"inputs": {"question": "q"}}, "must map the graph's 'image'"),
        ({"outputs": {"verdict": "answer"}}, "not one of the graph's outputs"),
        ({"outputs": {"answer": ""}}, "name a key of the parent state"),
        ({"graph": "zoomrefine"}, "unknown graph 'zoomrefine'; registered graphs: zoom_refine"),
    ],
)
def test_bad_mappings_fail_when_the_node_is_made(options: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        zoom_refine_node(**options)


@pytest.mark.reliability(
    "Composing",
    "a parent whose state is not a mapping (a list, a string) reaches the node",
    "one InvalidInputError saying what the node reads",
)
def test_a_state_that_is_not_a_mapping() -> None:
    from zoom_refine.graphs.compose_node import graph_inputs

    with pytest.raises(InvalidInputError, match="reads a mapping"):
        graph_inputs(["photo.png"], KEYS)
