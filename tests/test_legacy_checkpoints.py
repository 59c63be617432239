"""Backward compatibility: inference checkpoints written by an older rayseq still load and
predict exactly as they did, and the HTTP API still has the shape it had.

The fixtures in ``tests/fixtures/legacy/`` were made by rayseq at commit 21d6afa: one
tiny inference checkpoint per application, each trained through the real CLI
(``rayseq train``) on data the project generated, with a few inputs (texts, WAV
recordings, MP4 clips) and what that commit's predictor classes answered for them
(``expected.json``), plus that commit's OpenAPI document (``openapi.json``) and
``GET /v1/models`` over all eight checkpoints (``models.json``). How they were made:
``tests/fixtures/legacy/README.md``.

NEVER regenerate these fixtures with later code: they pin backwards compatibility with
checkpoints written at 21d6afa. If a test here fails, the code changed what an existing
checkpoint loads as or predicts (or the API's shape): fix the code, or, for an
intentional change, say so in review and add new fixtures beside these instead of
overwriting them.

No Ray needed. All imports of rayseq's own modules are in the helper section below, so
a move of modules is fixed in one place.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

# --- project internals: the only place this file names rayseq modules ------------------
from pipelines.checkpoint import load_predictor
from serving.app import ServedModel, create_app
from serving.catalog import read_cards
from serving.limits import ServeLimits


def _classify(checkpoint, inputs):
    return {"classify": load_predictor(checkpoint).predict(inputs)}


def _decode(checkpoint, inputs):
    model = load_predictor(checkpoint)
    return {"beam_1": model.predict(inputs, beam_size=1), "beam_3": model.predict(inputs, beam_size=3)}


PREDICT = {
    # fixture -> predict(checkpoint_dir, inputs): texts for text models, (file name, bytes) pairs otherwise
    "text_classify": _classify,
    "translate": _decode,
    "audio_classify": _classify,
    "speech_ctc": _decode,
    "speech_attention": _decode,
    "video_classify": _classify,
    "video_caption": _decode,
    "video_caption_attention": _decode,
}
TEXT_INPUTS = {"text_classify", "translate"}


def build_app(checkpoints: list[Path]):
    """The FastAPI app ``rayseq serve CHECKPOINT...`` would run, without Ray (no handles)."""
    cards = read_cards(checkpoints)
    return create_app({card.name: ServedModel(card, handle=None) for card in cards}, ServeLimits())
# --- end of project internals -------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "legacy"
TOLERANCE = 1e-6
"""Relative and absolute, for probabilities and scores; labels and texts must be equal."""


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models are tiny: a second intra-op thread only adds synchronisation."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_inputs(fixture: Path, name: str):
    listed = json.loads((fixture / "inputs" / "inputs.json").read_text(encoding="utf-8"))
    if name in TEXT_INPUTS:
        return listed
    return [(file, (fixture / "inputs" / file).read_bytes()) for file in listed]


def assert_matches(actual, expected, where: str = "result") -> None:
    """``actual`` has ``expected``'s structure, strings and integers exactly; floats within
    :data:`TOLERANCE`."""
    if isinstance(expected, float):
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), \
            f"{where}: {actual!r}, expected a number"
        assert math.isclose(actual, expected, rel_tol=TOLERANCE, abs_tol=TOLERANCE), \
            f"{where}: {actual!r} != {expected!r} (tolerance {TOLERANCE})"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and sorted(actual) == sorted(expected), \
            f"{where}: keys {sorted(actual) if isinstance(actual, dict) else actual!r} != {sorted(expected)}"
        for key in expected:
            assert_matches(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), \
            f"{where}: {actual!r} does not have {len(expected)} items"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_matches(a, e, f"{where}[{i}]")
    else:
        assert type(actual) is type(expected) and actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("name", sorted(PREDICT))
def test_legacy_checkpoint_predicts_as_when_written(name):
    fixture = FIXTURES / name
    expected = json.loads((fixture / "expected.json").read_text(encoding="utf-8"))
    result = PREDICT[name](fixture / "checkpoint", read_inputs(fixture, name))
    # through JSON, as the HTTP answers go (tuples become lists; it must be serializable)
    assert_matches(json.loads(json.dumps(result)), expected)


SERVED = ("text_classify", "translate", "audio_classify", "speech_ctc", "speech_attention", "video_classify",
          "video_caption", "video_caption_attention")
"""The order the snapshots served the checkpoints in: names come from the recipes and are
made unique in this order (speech_attention is ``fsdd_speech-2``, video_caption_attention
``video_caption-2``)."""


def legacy_app():
    return build_app([FIXTURES / name / "checkpoint" for name in SERVED])


ADDED_ROUTES = {"/v1/models/{name}/tag": {"TagResponse", "Tagged", "Entity"},
                "/v1/models/{name}/compose": {"Composed"},
                "/v1/models/{name}/synthesize": {"SynthesizeResponse", "SynthesizedAudio"}}
"""Routes of applications added after the snapshot, with the schemas they brought."""

ADDED_FIELDS = {"ModelInfo": {"speakers", "words", "conditions"}}
"""Optional fields added to the snapshot's schemas since (old clients ignore them)."""

ADDED_BODIES = {"/v1/models/{name}/generate": 1}
"""Paths that take more JSON bodies since (``anyOf``: the snapshot's first, then this many
of applications that share the path: conditional generators'), and whose description
gained a paragraph for them at its end."""


def without_added_bodies(document: dict, snapshot: dict) -> None:
    """``document`` with the bodies and description paragraphs of :data:`ADDED_BODIES`
    taken out, after checking the snapshot's body is still the first, unchanged."""
    for path, added in ADDED_BODIES.items():
        post, old = document["paths"][path]["post"], snapshot["paths"][path]["post"]
        content = post["requestBody"]["content"]["application/json"]
        bodies = content.pop("schema")["anyOf"]
        assert len(bodies) == 1 + added
        content["schema"] = bodies[0]
        assert post["description"].startswith(old["description"] + "\n\n")
        post["description"] = old["description"]


def test_openapi_document_is_unchanged():
    """The snapshot's routes and schemas, exactly; new applications may only add theirs."""
    snapshot = json.loads((FIXTURES / "openapi.json").read_text(encoding="utf-8"))
    document = json.loads(json.dumps(legacy_app().openapi()))
    added_paths = set(document["paths"]) - set(snapshot["paths"])
    assert added_paths == set(ADDED_ROUTES)
    added_schemas = set(document["components"]["schemas"]) - set(snapshot["components"]["schemas"])
    assert added_schemas == set().union(*ADDED_ROUTES.values())
    without_added_bodies(document, snapshot)
    for path in added_paths:
        del document["paths"][path]
    for schema in added_schemas:
        del document["components"]["schemas"][schema]
    for schema, fields in ADDED_FIELDS.items():
        properties = document["components"]["schemas"][schema]["properties"]
        required = document["components"]["schemas"][schema].get("required", [])
        assert fields <= set(properties) and not fields & set(required)
        for name in fields:
            del properties[name]
    assert document == snapshot


def test_model_list_of_legacy_checkpoints_is_unchanged():
    from fastapi.testclient import TestClient

    snapshot = json.loads((FIXTURES / "models.json").read_text(encoding="utf-8"))
    response = TestClient(legacy_app()).get("/v1/models")
    assert response.status_code == 200, response.text
    assert response.json() == snapshot
