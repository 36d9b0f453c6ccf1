"""Pilot that chose EfficientNet-Lite0's fine-tuning depth and rate, on a validation split only (never test).

3,000 stratified training images (seed 3) of the CIFAR-10 JPEG copy: 2,000 to train, 1,000 to
validate. Head on cached 224px ImageNet features for 10 epochs, then each recipe fine-tunes
a copy for 3 epochs with augmentation. Its runs are in research/results/finetune_recipe_pilot.log.

Usage: python research/finetune_recipe_pilot.py --data-dir DIR [--weights-cache DIR] \\
    '[["study",30,1e-5],["from_block8_1e-4",72,1e-4]]'
"""

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split

from cifar10_transfer import efficientnet_lite as el
from cifar10_transfer.data import load_dataset
from cifar10_transfer.models import compile_classifier
from cifar10_transfer.pipelines import augment_batch
from cifar10_transfer.weights import keras_models_dir, lite0_checkpoint_path

SEED = 3


def stratified_take(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified, seeded subset of `size` labels: the draw the pilot's log was made with."""
    taken, _ = train_test_split(np.arange(len(labels)), train_size=size, stratify=labels, random_state=seed)
    return np.sort(taken)


def pipe(x, y, aug=False, shuffle=False):
    """Batches of 32 at 224px, preprocessed for EfficientNet-Lite0; augmented and shuffled where asked."""
    d = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        d = d.shuffle(len(y), seed=SEED)
    d = d.batch(32)
    if aug:
        noise = tf.data.Dataset.random(seed=SEED, rerandomize_each_iteration=True).batch(2)
        d = tf.data.Dataset.zip((d, noise)).map(
            lambda b, k: (el.preprocess(augment_batch(tf.image.resize(tf.cast(b[0], tf.float32), (224, 224)), k)),
                          b[1]))
    else:
        d = d.map(lambda a, b: (el.preprocess(tf.image.resize(tf.cast(a, tf.float32), (224, 224))), b))
    return d.prefetch(2)


def fresh(full):
    """A copy of the ImageNet network cut to (frozen backbone, pooled features, new head, whole model)."""
    f = el.build(224, include_top=True)
    f.set_weights(full.get_weights())
    bb = keras.Model(f.input, f.get_layer("top_relu6").output)
    bb.trainable = False
    inp = keras.Input((224, 224, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(bb(inp, training=False))
    hin = keras.Input((1280,))
    h = keras.layers.Dense(256, activation="relu")(hin)
    h = keras.layers.Dropout(0.5)(h)
    head = keras.Model(hin, keras.layers.Dense(10, activation="softmax")(h))
    return bb, keras.Model(inp, pooled), head, keras.Model(inp, head(pooled))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="the CIFAR-10 copy (the log's runs read the JPEG copy)")
    parser.add_argument("--weights-cache", default=str(keras_models_dir()),
                        help="where the converted ImageNet weights are cached (default: Keras's models folder)")
    parser.add_argument("recipes", help='JSON list of [name, last N backbone layers unfrozen, learning rate]')
    args = parser.parse_args()
    recipes = json.loads(args.recipes)

    keras.utils.set_random_seed(SEED)
    ds = load_dataset("cifar10", args.data_dir, SEED)
    idx = stratified_take(ds.y_train, 3000, SEED)
    np.random.default_rng(SEED).shuffle(idx)
    tr, va = idx[:2000], idx[2000:]
    xtr, ytr, xva, yva = ds.x_train[tr], ds.y_train[tr], ds.x_train[va], ds.y_train[va]
    full = el.build(224, include_top=True)
    full.load_weights(el.converted_weights(lite0_checkpoint_path(), args.weights_cache))

    bb, feat, head, model = fresh(full)
    t = time.time()
    ftr = feat.predict(pipe(xtr, ytr), verbose=0)
    fva = feat.predict(pipe(xva, yva), verbose=0)
    print("features s", time.time() - t, flush=True)
    compile_classifier(head, 1e-3)
    h = head.fit(ftr, ytr, validation_data=(fva, yva), epochs=10, batch_size=64, verbose=0)
    print("head val", [round(v, 3) for v in h.history["val_accuracy"]], flush=True)
    head_w = head.get_weights()
    for name, n_layers, lr in recipes:
        bb, feat, head, model = fresh(full)
        head.set_weights(head_w)
        bb.trainable = True
        total = len(bb.layers)
        for i, layer in enumerate(bb.layers):
            layer.trainable = i >= total - n_layers and not isinstance(layer, keras.layers.BatchNormalization)
        compile_classifier(model, lr)
        t = time.time()
        h = model.fit(pipe(xtr, ytr, True, True), validation_data=pipe(xva, yva), epochs=3, verbose=0)
        print(name, n_layers, lr, "val", [round(v, 3) for v in h.history["val_accuracy"]],
              "s", round(time.time() - t), flush=True)


if __name__ == "__main__":
    main()
