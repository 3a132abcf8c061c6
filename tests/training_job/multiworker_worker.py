"""One worker of the two-process MultiWorkerMirroredStrategy test (run as a script).

Reads TF_CONFIG from the environment, builds the strategy the training job's `--strategy auto`
would (MultiWorkerMirroredStrategy, joined through the job's own cluster plan), trains a tiny
CNN-ViT for a few steps with the project's training loop and writes the final weights and history
to the folder given as argv[1].
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cnn_vit.model import build_model
from synthetic.xrays import encode_png, generate_xray
from tests.training_job.tiny import TINY_CONFIG
from training_job.options import TrainingOptions
from training_job.pipeline import make_dataset
from training_job.strategy import create_strategy, plan_strategy
from training_job.training_loop import train_model


def main(output: Path) -> None:
    plan = plan_strategy("auto", gpu_count=0, tf_config=os.environ["TF_CONFIG"])
    assert plan.kind == "multi-worker", plan
    strategy = create_strategy(plan)
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), strategy
    keras.utils.set_random_seed(0)
    classes = ["normal", "covid", "no-covid"]
    items, labels = [], []
    for index in range(24):
        film = generate_xray(classes[index % 3], index, size_range=(40, 48))
        items.append(encode_png(film.image))
        labels.append(index % 3)
    training = TrainingOptions(batch_size=8, epochs=2, patience=5)
    train = make_dataset(items, labels, TINY_CONFIG.image_size, 8, training=True, seed=0)
    validation = make_dataset(items[:12], labels[:12], TINY_CONFIG.image_size, 8, training=False)
    with strategy.scope():
        model = build_model(TINY_CONFIG)
    initial = model.get_weights()
    result = train_model(model, train, validation, training, strategy=strategy)
    output.mkdir(parents=True, exist_ok=True)
    np.savez(output / "initial.npz", *initial)
    np.savez(output / "final.npz", *model.get_weights())
    (output / "history.json").write_text(
        json.dumps({"replicas": result.replicas, "history": result.history_rows()})
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
