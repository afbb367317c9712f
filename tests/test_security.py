"""Security: no path from model output or a dataset cell escapes the dataset root, no code runs
from data, and API keys are never written down.

Path checks watch the real thing: a Python audit hook records every file the process opens (the
`open` event covers `open()`, `Path.read_bytes`, PIL and sqlite's Python side) while a hostile
input is handled, and the test fails if anything outside the allowed folders was opened. The
targets are `../../etc/passwd` and a real JPEG planted just outside the dataset root, which a
loader that followed the path would happily decode.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import dataset_fixtures as fixtures
import pytest
from dataset_fixtures import HR_HEADER, MME_LITE_HEADER, b64, jpeg_bytes, write_tsv
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from PIL import Image
from typer.testing import CliRunner
from typing_extensions import TypedDict

from zoom_refine import ZoomContext, build_graph, crop_tool
from zoom_refine.agent.regions import NO_BOX
from zoom_refine.cli import app
from zoom_refine.testing import RuleVisionModel, ScriptedToolCallingModel, ScriptedVisionModel

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("agent", "tools", "graphs", "evals", "zoom_refine")
TRAVERSAL = "../../etc/passwd"
runner = CliRunner()


# --- the audit hook ------------------------------------------------------------------------------

RISKY_EVENTS = frozenset(
    {
        "os.system",
        "subprocess.Popen",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "pickle.find_class",
    }
)
"""Audit events that mean code ran from data: a shell, a process, or unpickling a class."""


@dataclass
class Audit:
    """What the process did while a `watching()` block ran."""

    opened: list[str] = field(default_factory=list)
    risky: list[tuple[str, str]] = field(default_factory=list)


_WATCHERS: list[Audit] = []
_LOCK = threading.Lock()
_INSTALLED = False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _WATCHERS:
        return
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        for audit in _WATCHERS:
            audit.opened.append(path)
    elif event in RISKY_EVENTS:
        for audit in _WATCHERS:
            audit.risky.append((event, repr(args)[:200]))


@contextmanager
def watching() -> Iterator[Audit]:
    """Record opened paths and risky events in this block. An audit hook cannot be removed, so
    one is installed once per process and does nothing outside these blocks."""
    global _INSTALLED
    with _LOCK:
        if not _INSTALLED:
            sys.addaudithook(_hook)
            _INSTALLED = True
    audit = Audit()
    _WATCHERS.append(audit)
    try:
        yield audit
    finally:
        _WATCHERS.remove(audit)


def system_roots() -> list[Path]:
    """Where the interpreter and libraries live (imports, fonts, zoneinfo …): not user data."""
    paths = sysconfig.get_paths()
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, *paths.values(), str(REPO)]
    candidates += ["/dev", "/proc", "/sys", "/usr/lib", "/usr/share", "/usr/local/lib"]
    return [Path(item).resolve() for item in candidates]


def outside(audit: Audit, allowed: list[Path]) -> list[str]:
    """Opened paths that are not under `allowed` or the system roots."""
    roots = [root.resolve() for root in allowed] + system_roots()
    found = []
    for path in audit.opened:
        resolved = Path(path).resolve() if os.path.isabs(path) else (Path.cwd() / path).resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            found.append(path)
    return found


@pytest.mark.reliability(
    "Security",
    "self-check: the audit hook sees a file opened through PIL",
    "the planted file is recorded and flagged as outside the allowed folders",
)
def test_the_audit_hook_sees_what_is_opened(tmp_path: Path) -> None:
    root, secret = planted(tmp_path)
    with watching() as audit:
        Image.open(secret).load()
    assert outside(audit, [root]) == [str(secret)]
    assert outside(audit, [tmp_path]) == []


# --- dataset cells -------------------------------------------------------------------------------


@pytest.fixture
def scripted_model(monkeypatch: pytest.MonkeyPatch) -> RuleVisionModel:
    model = RuleVisionModel()
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    return model


def planted(tmp_path: Path) -> tuple[Path, Path]:
    """(dataset root, a real JPEG just outside it that a path cell will try to reach)."""
    root = tmp_path / "data"
    root.mkdir()
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(jpeg_bytes("red"))
    return root, secret


def hr_tsv_paths(root: Path, secret: Path) -> Path:
    def row(index: int, image: str) -> list[Any]:
        return [index, "Q?", "A", "single", "w", "x", "y", "z", "cycle1", image]

    long_path = "../" * 30 + "etc/passwd"  # longer than an index reference: read as base64
    rows = [
        row(0, b64(jpeg_bytes("blue"))),
        row(1, TRAVERSAL),
        row(2, "../secret.jpg"),
        row(3, str(secret)),
        row(4, long_path),
    ]
    return write_tsv(root / "hr_bench_4k.tsv", HR_HEADER, rows)


def mme_json_paths(root: Path, secret: Path) -> Path:
    (root / "ok.jpg").write_bytes(jpeg_bytes("blue"))
    items = [
        {
            "Question_id": f"q{number}",
            "Image": image,
            "Text": "Q?",
            "Answer choices": ["(A) x", "(B) y"],
            "Ground truth": "A",
        }
        for number, image in enumerate(["ok.jpg", TRAVERSAL, "../secret.jpg", str(secret)])
    ]
    path = root / "MME_RealWorld.json"
    path.write_text(json.dumps(items))
    return path


def vstar_jsonl_paths(root: Path, secret: Path) -> Path:
    (root / "direct_attributes").mkdir()
    (root / "direct_attributes" / "ok.jpg").write_bytes(jpeg_bytes("blue"))
    lines = [
        {"image": image, "text": "Q?\n(A) x\n(B) y", "label": "A", "category": "direct_attributes"}
        for image in ["direct_attributes/ok.jpg", TRAVERSAL, "../secret.jpg", "/etc/hostname"]
    ]  # ids are file stems: an absolute path to the secret would be a duplicate id here
    path = root / "test_questions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def vstar_folder_symlink(root: Path, secret: Path) -> Path:
    folder = root / "direct_attributes"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(jpeg_bytes("blue"))
    (folder / "passwd.jpg").symlink_to(secret)
    for stem in ("ok", "passwd"):
        annotation = {"question": "Q?", "options": ["x", "y"]}
        (folder / f"{stem}.json").write_text(json.dumps(annotation))
    return root


DATASET_PATHS = [
    pytest.param(
        "hr-bench",
        hr_tsv_paths,
        {"1", "2", "3", "4"},
        id="hr-bench-tsv",
        marks=pytest.mark.reliability(
            "Security",
            "HR-Bench image cell naming ../../etc/passwd, ../secret.jpg or an absolute path",
            "never opened (audit hook); rows recorded bad ('refers to index …, which has no "
            "image' / 'not valid base64'); the valid row runs",
        ),
    ),
    pytest.param(
        "mme-realworld",
        mme_json_paths,
        {"q1", "q2", "q3"},
        id="mme-json",
        marks=pytest.mark.reliability(
            "Security",
            "MME-RealWorld Image naming ../../etc/passwd, ../secret.jpg or an absolute path",
            "never opened (audit hook); rows recorded bad: 'points outside the dataset root'",
        ),
    ),
    pytest.param(
        "vstar",
        vstar_jsonl_paths,
        {"passwd", "secret", "hostname"},
        id="vstar-jsonl",
        marks=pytest.mark.reliability(
            "Security",
            "V* image naming ../../etc/passwd, ../secret.jpg or an absolute path",
            "never opened (audit hook); rows recorded bad: 'points outside the dataset root'",
        ),
    ),
    pytest.param(
        "vstar",
        vstar_folder_symlink,
        {"passwd"},
        id="vstar-folder-symlink",
        marks=pytest.mark.reliability(
            "Security",
            "V* folder image that is a symlink to a file outside the root",
            "never opened (audit hook); row recorded bad: 'points outside the dataset root'",
        ),
    ),
]


@pytest.mark.parametrize(("benchmark", "write", "bad_ids"), DATASET_PATHS)
def test_dataset_paths_never_leave_the_root(
    benchmark: str,
    write: Any,
    bad_ids: set[str],
    tmp_path: Path,
    scripted_model: RuleVisionModel,
) -> None:
    root, secret = planted(tmp_path)
    data = write(root, secret)
    out = tmp_path / "out"
    with watching() as audit:
        result = runner.invoke(
            app, ["eval", benchmark, "--data", str(data), "--out", str(out), "--model", "openai:x"]
        )
    assert result.exit_code == 0, result.output
    assert any(Path(path).is_relative_to(root) for path in audit.opened)  # the hook saw reads
    assert outside(audit, [root, out]) == []
    assert not any(path.endswith(("passwd", "secret.jpg")) for path in audit.opened)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    bad = {r["id"]: r["error"] for r in records if r["status"] == "error"}
    assert set(bad) == bad_ids, bad
    assert all(error.startswith("bad row: ") and "\n" not in error for error in bad.values())
    if benchmark != "hr-bench":
        assert all("outside the dataset root" in error for error in bad.values()), bad
    assert [r["status"] for r in records if r["id"] not in bad_ids] == ["ok"]


# --- model output --------------------------------------------------------------------------------


def scene(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "scene.png"
    Image.new("RGB", (800, 600), (30, 120, 200)).save(path)
    return path


def run_graph_watched(image: Path, model: BaseChatModel) -> tuple[dict[str, Any], Audit]:
    context = ZoomContext(model=model, image_format="png")
    inputs: Any = {"image": str(image), "question": "Which?", "options": ["x", "y"]}
    with watching() as audit:
        result = build_graph().invoke(inputs, context=context, config={"recursion_limit": 10})
    return result, audit


TEXT_REPLIES = [
    pytest.param(
        f"Answer: A\nBounding box: {TRAVERSAL}",
        "no_box",
        id="box-text",
        marks=pytest.mark.reliability(
            "Security",
            "model writes ../../etc/passwd as its box",
            "never opened (audit hook); recorded 'no box', the run ends with the answer",
        ),
    ),
    pytest.param(
        f"Answer: A\n![crop]({TRAVERSAL}) <img src='/etc/passwd'> image_id: {TRAVERSAL}\n"
        "Bounding box: [0.1, 0.1, 0.5, 0.5]",
        "confident",
        id="path-in-prose",
        marks=pytest.mark.reliability(
            "Security",
            "model names ../../etc/passwd as an image path or id in its reply",
            "never opened (audit hook); the crop comes from the registered image only",
        ),
    ),
]


@pytest.mark.parametrize(("reply", "stop_reason"), TEXT_REPLIES)
def test_paths_in_model_text_are_never_opened(reply: str, stop_reason: str, tmp_path: Path) -> None:
    image = scene(tmp_path / "data")
    model = ScriptedVisionModel(replies=[reply, "Rechecked Answer: B\nConfidence: 0.9"])
    result, audit = run_graph_watched(image, model)
    assert str(image) in audit.opened  # the hook saw the one legitimate read
    assert outside(audit, [image.parent]) == []
    assert result["stop_reason"] == stop_reason
    if stop_reason == "no_box":
        assert result["steps"][0]["note"] == NO_BOX and len(result["views"]) == 1
    else:
        assert result["views"][1]["box"][2] <= 800 and result["answer"] == "B"


@pytest.mark.reliability(
    "Security",
    "model replies with image blocks and its own crop tool call naming ../../etc/passwd",
    "never opened (audit hook); blocks and the model's tool calls are ignored; 'no box' recorded",
)
def test_image_blocks_and_tool_calls_in_a_reply_are_never_opened(tmp_path: Path) -> None:
    image = scene(tmp_path / "data")
    reply = AIMessage(
        content=[
            {"type": "image", "url": "file:///etc/passwd"},
            {"type": "image_url", "image_url": {"url": TRAVERSAL}},
            {"type": "image", "source_type": "url", "url": TRAVERSAL},
            {"type": "text", "text": "Answer: A"},
        ],
        tool_calls=[
            {"name": "crop", "args": {"image_id": TRAVERSAL, "box": [0, 0, 1, 1]}, "id": "x"}
        ],
    )
    result, audit = run_graph_watched(image, ScriptedToolCallingModel(replies=[reply]))
    assert outside(audit, [image.parent]) == []
    assert result["stop_reason"] == "no_box" and result["answer"] == "A"


class AgentState(TypedDict, total=False):
    """Some other agent's state that registers an image for the crop tool."""

    messages: Annotated[list[AnyMessage], add_messages]
    image: str


CROP_CALLS = [
    pytest.param(
        {"image_id": TRAVERSAL, "box": [0, 0, 1, 1]},
        "unknown image_id",
        id="image-id",
        marks=pytest.mark.reliability(
            "Security",
            "crop tool call with image_id ../../etc/passwd",
            "never opened (audit hook); tool error 'unknown image_id …; registered ids: img0'",
        ),
    ),
    pytest.param(
        {"image_id": "/etc/passwd", "box": [0, 0, 1, 1]},
        "unknown image_id",
        id="absolute-image-id",
        marks=pytest.mark.reliability(
            "Security",
            "crop tool call with image_id /etc/passwd",
            "never opened (audit hook); tool error 'unknown image_id'",
        ),
    ),
    pytest.param(
        {"image_id": "img0", "box": TRAVERSAL},
        "box",
        id="box-argument",
        marks=pytest.mark.reliability(
            "Security",
            "crop tool call with box '../../etc/passwd'",
            "never opened (audit hook); tool error (argument validation)",
        ),
    ),
    pytest.param(
        {"image_id": "img0", "box": [0.1, 0.1, 0.5, 0.5], "view_id": TRAVERSAL},
        None,
        id="view-id",
        marks=pytest.mark.reliability(
            "Security",
            "crop tool call with view_id ../../etc/passwd",
            "never opened (audit hook); the id only names the new view, cut from the "
            "registered image",
        ),
    ),
]


@pytest.mark.parametrize(("args", "error"), CROP_CALLS)
def test_crop_tool_arguments_are_never_paths(
    args: dict[str, Any], error: str | None, tmp_path: Path
) -> None:
    image = scene(tmp_path / "data")
    builder = StateGraph(AgentState)
    builder.add_node("tools", ToolNode([crop_tool]))
    builder.add_edge(START, "tools")
    call = AIMessage(content="", tool_calls=[{"name": "crop", "args": args, "id": "call-1"}])
    with watching() as audit:
        output = builder.compile().invoke({"image": str(image), "messages": [call]})
    assert outside(audit, [image.parent]) == []
    message = output["messages"][-1]
    assert isinstance(message, ToolMessage)
    if error is None:
        assert message.status == "success" and message.artifact["view"]["id"] == TRAVERSAL
    else:
        assert message.status == "error" and error in str(message.content)


# --- no code from data ---------------------------------------------------------------------------

UNSAFE_MODULES = frozenset(
    {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
)
"""Modules that turn bytes into code or arbitrary objects; none belongs in the package."""


def unsafe_calls(source: str, name: str) -> list[str]:
    """Each unsafe use in `source`, as 'file:line what': imports of `UNSAFE_MODULES`, builtin
    `eval` / `exec` / `compile`, `yaml.load` without a safe Loader, `torch.load` without
    `weights_only=True`, `numpy.load(allow_pickle=True)`, `pandas.read_pickle`."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=name)):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names if _unsafe_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and _unsafe_module(node.module):
            found.append(f"{where} from {node.module} import")
        elif isinstance(node, ast.Call):
            problem = _unsafe_call(node)
            if problem:
                found.append(f"{where} {problem}")
    return found


def _unsafe_module(name: str) -> bool:
    return name.split(".")[0] in UNSAFE_MODULES


def _keyword(node: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def _unsafe_call(node: ast.Call) -> str | None:
    function = node.func
    if isinstance(function, ast.Name) and function.id in ("eval", "exec", "compile"):
        return f"{function.id}()"
    if not isinstance(function, ast.Attribute):
        return None
    owner = function.value.id if isinstance(function.value, ast.Name) else ""
    attribute = function.attr
    if owner in ("builtins", "__builtins__") and attribute in ("eval", "exec", "compile"):
        return f"{owner}.{attribute}()"
    if owner == "yaml" and attribute in ("load", "load_all", "unsafe_load", "full_load"):
        loader = _keyword(node, "Loader")
        safe = isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")
        safe = safe or (isinstance(loader, ast.Name) and loader.id in ("SafeLoader", "CSafeLoader"))
        return None if safe and attribute != "unsafe_load" else f"yaml.{attribute}() unsafe"
    if owner == "torch" and attribute == "load":
        weights_only = _keyword(node, "weights_only")
        if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
            return "torch.load() without weights_only=True"
    if owner in ("np", "numpy") and attribute == "load":
        allow = _keyword(node, "allow_pickle")
        if isinstance(allow, ast.Constant) and allow.value is True:
            return "numpy.load(allow_pickle=True)"
    if owner in ("pd", "pandas") and attribute == "read_pickle":
        return "pandas.read_pickle()"
    return None


def package_files() -> list[Path]:
    return sorted(path for folder in PACKAGE_DIRS for path in (REPO / folder).rglob("*.py"))


OFFICIAL_CODE_RUNNER = "evals/official_extract.py:"


@pytest.mark.reliability(
    "Security",
    "pickle, eval/exec, unsafe yaml.load or torch.load in the package source",
    "none: an ast scan of every package file finds no such call or import",
)
def test_the_package_never_unpickles_or_evaluates_data() -> None:
    files = package_files()
    assert len(files) > 30  # the scan sees the package, not an empty folder
    found = [
        problem
        for path in files
        for problem in unsafe_calls(path.read_text(), str(path.relative_to(REPO)))
    ]
    # `zoom-refine official verify CHECKOUT` runs the official repository's own functions from a
    # checkout the user names (docs/fidelity.md); that one module compiles and executes that
    # code, nothing else does, and it never evaluates data.
    verifier = [problem for problem in found if problem.startswith(OFFICIAL_CODE_RUNNER)]
    assert [problem for problem in found if problem not in verifier] == []
    assert sorted({problem.split()[-1] for problem in verifier}) == [
        "compile()",
        "eval()",
        "exec()",
    ]


@pytest.mark.reliability(
    "Security",
    "self-check: the source scan finds each unsafe spelling",
    "pickle/dill imports, eval/exec/compile, yaml.load, torch.load, np.load(allow_pickle) found; "
    "literal_eval, safe_load, weights_only=True not",
)
def test_the_unsafe_call_scan_catches_each_pattern() -> None:
    """The scanner itself: each unsafe spelling is found, the safe ones are not."""
    unsafe = [
        "import pickle",
        "from pickle import loads",
        "import dill.settings",
        "eval('1')",
        "exec('x = 1')",
        "compile('1', 'f', 'eval')",
        "builtins.eval('1')",
        "yaml.load(text)",
        "yaml.load(text, Loader=yaml.FullLoader)",
        "yaml.unsafe_load(text)",
        "torch.load(path)",
        "torch.load(path, weights_only=False)",
        "np.load(path, allow_pickle=True)",
        "pd.read_pickle(path)",
    ]
    for snippet in unsafe:
        assert unsafe_calls(snippet, "x.py"), snippet
    safe = [
        "ast.literal_eval(text)",
        "json.loads(text)",
        "re.compile('x')",
        "yaml.load(text, Loader=yaml.SafeLoader)",
        "yaml.safe_load(text)",
        "torch.load(path, weights_only=True)",
        "model.eval()",
    ]
    for snippet in safe:
        assert not unsafe_calls(snippet, "x.py"), snippet


OPTION_CELLS = [
    pytest.param(
        "__import__('os').system('touch PWNED')",
        "options cell is neither a list literal nor '(A) …' lines",
        id="bare-call",
        marks=pytest.mark.reliability(
            "Security",
            "options cell __import__('os').system('touch PWNED')",
            "never run (no os.system / subprocess audit event, no file); row recorded bad",
        ),
    ),
    pytest.param(
        "['(A) x', __import__('os').system('touch PWNED')]",
        "options cell is not a list literal (ValueError)",
        id="call-in-a-list",
        marks=pytest.mark.reliability(
            "Security",
            "options list holding __import__('os').system(…)",
            "ast.literal_eval refuses it: never run; row recorded 'not a list literal'",
        ),
    ),
    pytest.param(
        "[(lambda: __import__('subprocess').call(['touch', 'PWNED']))()]",
        "options cell is not a list literal (ValueError)",
        id="lambda",
        marks=pytest.mark.reliability(
            "Security",
            "options list holding a lambda that spawns a process",
            "never run (no subprocess audit event); row recorded 'not a list literal'",
        ),
    ),
]


@pytest.mark.parametrize(("cell", "reason"), OPTION_CELLS)
def test_option_lists_are_parsed_never_run(
    cell: str,
    reason: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scripted_model: RuleVisionModel,
) -> None:
    monkeypatch.chdir(tmp_path)
    image = b64(jpeg_bytes("red"))
    good = [1, "Q?", "['(A) x', '(B) y']", "A", "Perception/Monitoring", "x", image]
    bad = [2, "Q?", cell, "A", "Perception/Monitoring", "x", image]
    data = write_tsv(tmp_path / "data" / "lite.tsv", MME_LITE_HEADER, [good, bad])
    out = tmp_path / "out"
    with watching() as audit:
        result = runner.invoke(
            app, ["eval", "mme-realworld", "--data", str(data), "--out", str(out)]
        )
    assert result.exit_code == 0, result.output
    assert audit.risky == [] and not (tmp_path / "PWNED").exists()
    records = {r["id"]: r for r in map(json.loads, (out / "predictions.jsonl").open())}
    assert records["1"]["status"] == "ok"
    assert records["2"]["error"] == f"bad row: {reason}"


@pytest.mark.reliability(
    "Security",
    "reading a trace database back (checkpoints)",
    "no pickle: no pickle.find_class audit event while reading; msgpack only",
)
def test_reading_traces_unpickles_nothing(tmp_path: Path) -> None:
    from zoom_refine.graphs.traces import read_trace, run_graph

    image = scene(tmp_path / "data")
    model = ScriptedVisionModel(
        replies=["Answer: A\nBounding box: [0.1, 0.1, 0.5, 0.5]", "Rechecked Answer: B"]
    )
    db = tmp_path / "traces.db"
    inputs: Any = {"image": str(image), "question": "Which?", "options": ["x", "y"]}
    run = run_graph(inputs, ZoomContext(model=model, image_format="png"), db=db)
    with watching() as audit:
        trace = read_trace(db, str(run.thread_id))
    assert audit.risky == [] and [step.node for step in trace.steps][-1] == "refine"


# --- API keys ------------------------------------------------------------------------------------

SECRET = "sk-test-SECRET-123"
OPTION_SECRET = "sk-test-OPTION-456"


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`zoom-refine ARGS` in a fresh process (its real stdout and stderr, its own logging)."""
    code = "from zoom_refine.cli import app; app()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env=env
    )


def files_holding(folder: Path, secret: str) -> list[str]:
    """Every file under `folder` whose bytes contain `secret` (also UTF-16, in case)."""
    needles = [secret.encode(), secret.encode("utf-16-le")]
    return [
        str(path)
        for path in folder.rglob("*")
        if path.is_file() and any(needle in path.read_bytes() for needle in needles)
    ]


@pytest.mark.slow
@pytest.mark.reliability(
    "Security",
    "API key in OPENAI_API_KEY or --api-key, eval and ask against a real server",
    "the key appears in no written file (config.json, predictions, summary, report, trace "
    "SQLite, trace.json, pictures) and in no stdout/stderr",
)
def test_api_keys_are_never_written(internvl_server: Any, tmp_path: Path) -> None:
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    image = scene(tmp_path / "images")
    work = tmp_path / "work"
    model = ["--model", f"openai:{internvl_server.model_name}"]
    model += ["--base-url", internvl_server.base_url]
    env = {key: value for key, value in os.environ.items() if key != "OPENAI_API_KEY"}
    runs = [
        ({**env, "OPENAI_API_KEY": SECRET}, SECRET, "env"),
        (env, OPTION_SECRET, "option"),
    ]
    outputs: list[str] = []
    for environment, secret, how in runs:
        key = ["--api-key", secret] if how == "option" else []
        out = work / how
        evaluate = ["eval", "hr-bench", "--data", str(data), "--out", str(out / "eval")]
        evaluate += ["--limit", "2", "--method", "both", "--trace-db", str(out / "eval.db")]
        ask = ["ask", str(image), "Which?", "-o", "x", "-o", "y", "--stream", "--json"]
        ask += ["--trace-db", str(out / "ask.db"), "--save-trace", str(out / "ask")]
        commands = [
            [*evaluate, *model, *key],
            ["report", str(out / "eval")],
            [*ask, *model, *key],
            ["trace", str(out / "ask.db")],
        ]
        for command in commands:
            done = cli(command, environment)
            assert done.returncode == 0, (command, done.stderr[-2000:])
            outputs += [done.stdout, done.stderr]
        assert (out / "eval" / "config.json").is_file() and (out / "ask" / "trace.json").is_file()
        assert (out / "eval.db").stat().st_size > 0 and (out / "eval" / "report.md").is_file()
        assert files_holding(work, SECRET) == [] and files_holding(work, OPTION_SECRET) == []
    assert not any(SECRET in text or OPTION_SECRET in text for text in outputs)
    assert any("trace: thread" in text for text in outputs)  # the outputs were captured
