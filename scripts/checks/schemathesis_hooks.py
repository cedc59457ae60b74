"""Schemathesis hooks for skyscribe's API (used by scripts/checks/check-openapi.sh): what a valid
`binary` body is. Schemathesis makes real images for `image/*` bodies by itself, but random
bytes for `application/octet-stream` and for the multipart field `image` (encoded as
image/png): the server rightly refuses those as unreadable, so they are registered here as the
documented way to say what valid binary data is (Schemathesis' "custom media types").
"""
import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image


def encode(width, height, colour, fmt):
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format=fmt)
    return out.getvalue()


images = st.builds(
    encode,
    st.integers(1, 96),
    st.integers(1, 96),
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    st.sampled_from(["PNG", "JPEG", "WEBP", "GIF", "BMP"]),
)
schemathesis.openapi.media_type("application/octet-stream", images)
schemathesis.openapi.media_type("image/png", images)


# Labels in each preset (one wording each), and templates in each template set.
PRESET_LABELS = {"eurosat": 10, "eurosat-folders": 10, "eurosat-reduced": 5, "xview": 60,
                 "rsicd": 30, "describe": 35}
SET_TEMPLATES = {"satellite": 1, "eurosat": 3, "aerial": 3, "plain": 1, "remote-sensing": 5}


@schemathesis.hook
def filter_query(ctx, query):
    """Rules across `labels` and `template` that JSON Schema cannot state (the document says
    them in words): a list names each label once (spaces around commas aside) and at most 512
    of them, and labels × templates make at most 2,048 prompts. Generated requests that break
    them are not schema-valid requests for the server, so they are not sent as such."""
    query = query or {}
    labels = query.get("labels")
    # Without labels, /v1/describe uses its vocabulary (/v1/labels refuses the request).
    count = PRESET_LABELS["describe"]
    if isinstance(labels, str):
        count = 1
        if labels.strip().lower() in PRESET_LABELS:
            count = PRESET_LABELS[labels.strip().lower()]
        elif "," in labels:
            names = [n.strip() for n in labels.split(",") if n.strip()]
            if len(names) != len(set(names)) or len(names) > 512:
                return False
            count = len(names)
    templates = query.get("template") or []
    if isinstance(templates, str):
        templates = [templates]
    if not isinstance(templates, list):
        return True  # a schema-violating value: the server refuses it anyway
    n_templates = sum(SET_TEMPLATES.get(t.strip(), 1) if isinstance(t, str) else 1
                      for t in templates) or 1
    return count * n_templates <= 2048
