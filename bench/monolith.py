"""The original monolith's request path, re-created for comparison only (never deployed).

A FastAPI app that builds the `seed` CNN-ViT at import and loads the very weights the system
under test serves, with the original's OAuth2 password flow (`POST /token`, bearer tokens) and
its routes `/x-ray` and `/grad_cam`. Per request, inside an `async def` handler (so the Keras
call blocks the event loop, as it did in the original), it decodes the upload, centre-crops,
resizes and equalises it with Pillow and NumPy, calls Keras `model.predict`, appends a row to
one CSV file, and answers. `/grad_cam` computes Grad-CAM in-process with `tf.GradientTape`
(keras-io's `make_gradcam_heatmap`, whose split model is rebuilt on every call), colours it
with matplotlib's jet map, writes the PNG and returns it.

Preprocessing is NumPy/Pillow, as the original did it (with OpenCV), not the shared in-graph
function run eagerly: eager TensorFlow adds per-op dispatch costs the original never paid. It
is value-identical for the benchmark's images (8-bit grey 256 px PNGs: decode, no crop, no
resize, then OpenCV's `equalizeHist` formula via `equalize_histogram_reference`), so both
systems see the same input tensor; for other sizes Pillow's antialiased bilinear resize stands
in for OpenCV's.

    BENCH_MONOLITH_DIR=/tmp/x SECRET_KEY=... uvicorn bench.monolith:app --port 8000

`BENCH_MONOLITH_DIR` holds `authentication.csv` (the original's `id;email;role;hash;disabled`
with bcrypt hashes) and `model.weights.h5`; results go to `results.csv` and `grad_cam/` there.
`BENCH_MONOLITH_PRESET` picks another preset (default `seed`).
"""

from __future__ import annotations

import csv
import io
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import bcrypt
import jwt
import keras
import numpy as np
import tensorflow as tf
from fastapi import Depends, FastAPI, File, HTTPException, UploadFile, status
from fastapi.responses import Response
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from matplotlib import colormaps
from PIL import Image

from cnn_vit.config import CLASS_NAMES, get_preset
from cnn_vit.model import build_model
from cnn_vit.preprocessing import equalize_histogram_reference

WORK_DIR = Path(os.environ.get("BENCH_MONOLITH_DIR", "."))
SECRET_KEY = os.environ.get("SECRET_KEY", "monolith-benchmark-secret-key-not-for-production")
ALGORITHM = "HS256"
TOKEN_MINUTES = 60
CONFIG = get_preset(os.environ.get("BENCH_MONOLITH_PRESET", "seed"))
RESULTS_CSV = WORK_DIR / "results.csv"
GRAD_CAM_DIR = WORK_DIR / "grad_cam"

# -- the model, built at import as the original did -----------------------------------------------

model = build_model(CONFIG)
weights_file = WORK_DIR / "model.weights.h5"
if weights_file.is_file():
    model.load_weights(str(weights_file))


def _load_users(path: Path) -> dict[str, dict[str, str]]:
    users: dict[str, dict[str, str]] = {}
    if not path.is_file():
        return users
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter=";"):
            users[row["email"]] = row
    return users


USERS = _load_users(WORK_DIR / "authentication.csv")
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token")
app = FastAPI(title="X-ray monolith (benchmark re-creation)")


# -- auth ------------------------------------------------------------------------------------------


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def create_access_token(subject: str) -> str:
    expires = datetime.now(UTC) + timedelta(minutes=TOKEN_MINUTES)
    return jwt.encode({"sub": subject, "exp": expires}, SECRET_KEY, algorithm=ALGORITHM)


async def get_current_user(token: Annotated[str, Depends(oauth2_scheme)]) -> dict[str, str]:
    try:
        payload = jwt.decode(token, SECRET_KEY, algorithms=[ALGORITHM])
    except jwt.PyJWTError:
        raise _unauthorized("Could not validate credentials") from None
    user = USERS.get(str(payload.get("sub")))
    if user is None or user.get("disabled", "").lower() in ("1", "true"):
        raise _unauthorized("Could not validate credentials")
    return user


@app.post("/token")
async def login(form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> dict[str, str]:
    user = USERS.get(form.username)
    if user is None or not bcrypt.checkpw(form.password.encode(), user["hashed_password"].encode()):
        raise _unauthorized("Incorrect username or password")
    return {"access_token": create_access_token(user["email"]), "token_type": "bearer"}


@app.get("/user/me")
async def me(user: Annotated[dict[str, str], Depends(get_current_user)]) -> dict[str, str]:
    return {"id": user["id"], "email": user["email"], "role": user["role"]}


# -- preprocessing (NumPy/Pillow, per request) -----------------------------------------------------


def preprocess(data: bytes, size: int) -> np.ndarray:
    """Decode, grey, centre crop, resize, equalise: float32 [S, S, 1] in [0, 1]."""
    image: Image.Image = Image.open(io.BytesIO(data))
    image = image.convert("L")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    levels = equalize_histogram_reference(np.asarray(image, dtype=np.uint8))
    return (levels.astype(np.float32) * np.float32(1.0 / 255.0))[..., np.newaxis]


def _append_result(row: list[Any]) -> None:
    new = not RESULTS_CSV.exists()
    with RESULTS_CSV.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=";")
        if new:
            writer.writerow(["id", "user_id", "time", "file", "class", *CLASS_NAMES, "kind"])
        writer.writerow(row)


# -- prediction ------------------------------------------------------------------------------------


@app.post("/x-ray")
async def predict(
    file: Annotated[UploadFile, File()],
    user: Annotated[dict[str, str], Depends(get_current_user)],
) -> dict[str, Any]:
    data = await file.read()
    image = preprocess(data, CONFIG.image_size)
    probabilities = model.predict(image[np.newaxis], verbose=0)[0]  # blocks the event loop
    index = int(np.argmax(probabilities))
    inference_id = uuid.uuid4().hex
    moment = datetime.now(UTC).isoformat()
    _append_result(
        [inference_id, user["id"], moment, file.filename, CLASS_NAMES[index]]
        + [f"{value:.6f}" for value in probabilities]
        + ["predict"]
    )
    return {
        "id": inference_id,
        "class": CLASS_NAMES[index],
        "probabilities": {
            name: float(value) for name, value in zip(CLASS_NAMES, probabilities, strict=True)
        },
        "time": moment,
    }


# -- Grad-CAM (keras-io's recipe, in-process) ------------------------------------------------------


def make_gradcam_heatmap(image: np.ndarray, layer_name: str) -> tuple[np.ndarray, int]:
    """keras-io `make_gradcam_heatmap`: the split model is built per call, as there."""
    grad_model = keras.models.Model(
        model.inputs, [model.get_layer(layer_name).output, model.output]
    )
    with tf.GradientTape() as tape:
        layer_output, predictions = grad_model(image[np.newaxis])
        predicted = int(tf.argmax(predictions[0]))
        class_channel = predictions[:, predicted]
    grads = tape.gradient(class_channel, layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = layer_output[0] @ pooled_grads[..., tf.newaxis]
    heatmap = tf.squeeze(heatmap)
    heatmap = tf.maximum(heatmap, 0) / (tf.math.reduce_max(heatmap) + 1e-8)
    return heatmap.numpy(), predicted


def overlay_png(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> bytes:
    """keras-io `save_and_display_gradcam`: jet-coloured heatmap over the image, as PNG."""
    size = image.shape[0]
    jet_colors = np.asarray(colormaps["jet"](np.arange(256)))[:, :3]
    jet_heatmap = jet_colors[(255 * heatmap).astype(np.uint8)]
    jet_image = Image.fromarray((jet_heatmap * 255).astype(np.uint8)).resize((size, size))
    film = np.repeat((image[..., 0] * 255).astype(np.uint8)[..., np.newaxis], 3, axis=-1)
    blended = np.asarray(jet_image, dtype=np.float32) * alpha + film
    superimposed = np.clip(blended / blended.max() * 255, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(superimposed).save(buffer, format="PNG")
    return buffer.getvalue()


@app.post("/grad_cam")
async def grad_cam(
    file: Annotated[UploadFile, File()],
    user: Annotated[dict[str, str], Depends(get_current_user)],
) -> Response:
    data = await file.read()
    image = preprocess(data, CONFIG.image_size)
    heatmap, predicted = make_gradcam_heatmap(image, CONFIG.gradcam_layer)
    png = overlay_png(image, heatmap)
    inference_id = uuid.uuid4().hex
    GRAD_CAM_DIR.mkdir(parents=True, exist_ok=True)
    (GRAD_CAM_DIR / f"{inference_id}.png").write_bytes(png)
    _append_result(
        [inference_id, user["id"], datetime.now(UTC).isoformat(), file.filename]
        + [CLASS_NAMES[predicted]]
        + [""] * len(CLASS_NAMES)
        + ["gradcam"]
    )
    return Response(png, media_type="image/png", headers={"X-Inference-Id": inference_id})


@app.get("/health")
async def health() -> dict[str, float]:
    return {"time": time.time()}
