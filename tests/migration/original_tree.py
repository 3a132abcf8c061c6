"""An original system's storage tree, generated (reference section 4): its users file with
bcrypt hashes, a `history.csv` with well-formed and malformed rows, Grad-CAM PNGs, an image
database; and its model (section 5) built with tf-keras (Keras 2), whose `save_weights(...hdf5)`
writes exactly the file the original did."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import bcrypt
from PIL import Image

from storage import Store

USERS = ((0, "alice@gmail.com", "user"), (1, "bob@gmail.com", "user"), (3, "admin", "admin"))
PASSWORD = "original-password"
HISTORY_HEADER = "id;datetime;covid;no-covid;normal"
# Malformed rows, each on its own line of the file (line numbers are reported).
MALFORMED = [
    "x;2024-01-31 10:00:00.000001;0.1;0.2;0.7",  # id not an integer
    "0;31/01/2024 10:00;0.1;0.2;0.7",  # another date format
    "0;2024-01-31 10:00:00.000002;0.1;0.2",  # a field missing
    "0;2024-01-31 10:00:00.000003;0.1;nan;0.7",  # not a probability
    "0;2024-01-31 10:00:00.000004;0.1;0.2;1.7",  # out of range
]


@dataclass(frozen=True)
class OriginalTree:
    rows: int  # well-formed history rows
    malformed_lines: list[int]
    gradcam_files: list[str]
    users_csv: bytes


def users_csv() -> bytes:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    lines = ["id;email;role;hashed_password;disabled"]
    lines += [f"{user_id};{email};{role};{hashed};False" for user_id, email, role in USERS]
    return ("\n".join(lines) + "\n").encode()


def history_csv(rows: int, seed: int = 0) -> tuple[bytes, list[int]]:
    """`rows` well-formed rows (as the original wrote them: its mislabelled columns) with the
    malformed ones spread among them; the malformed rows' line numbers."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 31, 9, 0, 0)
    lines, malformed_lines = [HISTORY_HEADER], []
    bad = iter(MALFORMED)
    every = max(1, rows // len(MALFORMED))
    for index in range(rows):
        if index % every == every - 1:
            row = next(bad, None)
            if row is not None:
                lines.append(row)
                malformed_lines.append(len(lines))
        user_id = USERS[index % len(USERS)][0]
        moment = start + timedelta(seconds=37 * index, microseconds=rng.randrange(1_000_000))
        values = [rng.random() for _ in range(3)]
        total = sum(values)
        written = ";".join(f"{value / total!r}" for value in values)
        lines.append(f"{user_id};{moment:%Y-%m-%d %H:%M:%S.%f};{written}")
    return ("\n".join(lines) + "\n").encode(), malformed_lines


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_original_tree(store: Store, rows: int = 3000) -> OriginalTree:
    users = users_csv()
    store.put("input/db_auth/authentication.csv", users)
    history, malformed = history_csv(rows)
    store.put("output/inference/history.csv", history)
    names = []
    for index in range(3):
        name = f"4b5c0a1e-0000-4000-8000-00000000000{index}.png"
        store.put(f"output/learning/grad_cam/{name}", _png(index))
        names.append(f"output/learning/grad_cam/{name}")
    return OriginalTree(rows, malformed, names, users)


def original_keras2_model(image_size: int = 256) -> Any:
    """The original CNN-ViT (section 5) in tf-keras: augmentation, encoder, patches, patch
    encoder, four transformer blocks, the MLP head."""
    import tensorflow as tf
    import tf_keras as keras
    from tf_keras import layers

    class Patches(layers.Layer):
        def call(self, images: Any) -> Any:
            patches = tf.image.extract_patches(
                images=images,
                sizes=[1, 1, 1, 1],
                strides=[1, 1, 1, 1],
                rates=[1, 1, 1, 1],
                padding="VALID",
            )
            return tf.reshape(patches, [tf.shape(images)[0], -1, patches.shape[-1]])

    class PatchEncoder(layers.Layer):
        def __init__(self, num_patches: int, projection_dim: int) -> None:
            super().__init__()
            self.num_patches = num_patches
            self.projection = layers.Dense(units=projection_dim)
            self.position_embedding = layers.Embedding(num_patches, projection_dim)

        def call(self, patch: Any) -> Any:
            positions = tf.range(start=0, limit=self.num_patches, delta=1)
            return self.projection(patch) + self.position_embedding(positions)

    def mlp(x: Any, units: tuple[int, ...], rate: float) -> Any:
        for width in units:
            x = layers.Dense(width, activation=tf.nn.gelu)(x)
            x = layers.Dropout(rate)(x)
        return x

    inputs = layers.Input(shape=(image_size, image_size, 1))
    augmentation = keras.Sequential(
        [
            layers.Rescaling(1 / 255),
            layers.RandomFlip("horizontal"),
            layers.RandomRotation(10 / 360),
            layers.RandomZoom(0.2, 0.2),
        ],
        name="augmentation",
    )
    blocks = []
    for filters in (128, 128, 64, 64, 64):
        blocks += [layers.Conv2D(filters, 3, padding="same", activation="relu")]
        blocks += [layers.MaxPooling2D(2)]
    encoder = keras.Sequential(blocks, name="encoder")
    features = encoder(augmentation(inputs))
    encoded = PatchEncoder((image_size // 32) ** 2, 64)(Patches()(features))
    for _ in range(4):
        x1 = layers.LayerNormalization(epsilon=1e-6)(encoded)
        attention = layers.MultiHeadAttention(num_heads=8, key_dim=64, dropout=0.1)(x1, x1)
        x2 = layers.Add()([attention, encoded])
        x3 = mlp(layers.LayerNormalization(epsilon=1e-6)(x2), (128, 64), 0.1)
        encoded = layers.Add()([x3, x2])
    representation = layers.LayerNormalization(epsilon=1e-6)(encoded)
    representation = layers.Dropout(0.5)(layers.Flatten()(representation))
    outputs = layers.Dense(3, activation="softmax")(mlp(representation, (1024, 256), 0.5))
    return keras.Model(inputs=inputs, outputs=outputs)
