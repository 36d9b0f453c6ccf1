"""Pilot that chose EfficientNet-Lite0's fine-tuning recipe, on a validation split only (never test).

3,000 stratified training images (seed 3) of the CIFAR-10 JPEG copy: 2,000 to train, 1,000 to
validate. Head on cached 224px ImageNet features for 10 epochs, then each recipe fine-tunes
a copy for 3 epochs with augmentation. Output: benchmarks/results/finetune_recipe_pilot.log.

Usage: python benchmarks/finetune_recipe_pilot.py '[["study",30,1e-5],["from_block8_1e-4",72,1e-4]]'
(reads the JPEG copy from /tmp/cifar/cifar10-jpeg; the converted weights cache in /tmp/kcache).
"""
import time, json, sys, numpy as np, tensorflow as tf, keras
from cifar10_transfer import efficientnet_lite as el
from cifar10_transfer.data import load_dataset
from cifar10_transfer.pipelines import augment_batch, _stratified_take
from cifar10_transfer.models import compile_classifier
keras.utils.set_random_seed(3)
ds = load_dataset("cifar10", "/tmp/cifar/cifar10-jpeg", 3)
idx = _stratified_take(ds.y_train, 3000, 3); rng = np.random.default_rng(3); rng.shuffle(idx)
tr, va = idx[:2000], idx[2000:]
xtr, ytr, xva, yva = ds.x_train[tr], ds.y_train[tr], ds.x_train[va], ds.y_train[va]
def pipe(x, y, aug=False, shuffle=False):
    d = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle: d = d.shuffle(len(y), seed=3)
    d = d.batch(32)
    if aug:
        noise = tf.data.Dataset.random(seed=3, rerandomize_each_iteration=True).batch(2)
        d = tf.data.Dataset.zip((d, noise)).map(
            lambda b, k: (el.preprocess(augment_batch(tf.image.resize(tf.cast(b[0], tf.float32), (224,224)), k)), b[1]))
    else:
        d = d.map(lambda a, b: (el.preprocess(tf.image.resize(tf.cast(a, tf.float32), (224,224))), b))
    return d.prefetch(2)
full = el.build(224, include_top=True); full.load_weights(el.converted_weights(el.checkpoint_path(), "/tmp/kcache"))
def fresh():
    f = el.build(224, include_top=True); f.set_weights(full.get_weights())
    bb = keras.Model(f.input, f.get_layer("top_relu6").output); bb.trainable = False
    inp = keras.Input((224,224,3)); pooled = keras.layers.GlobalAveragePooling2D()(bb(inp, training=False))
    hin = keras.Input((1280,)); h = keras.layers.Dense(256, activation="relu")(hin); h = keras.layers.Dropout(0.5)(h)
    head = keras.Model(hin, keras.layers.Dense(10, activation="softmax")(h))
    return bb, keras.Model(inp, pooled), head, keras.Model(inp, head(pooled))
bb, feat, head, model = fresh()
t = time.time(); ftr = feat.predict(pipe(xtr, ytr), verbose=0); fva = feat.predict(pipe(xva, yva), verbose=0)
print("features s", time.time() - t, flush=True)
compile_classifier(head, 1e-3)
h = head.fit(ftr, ytr, validation_data=(fva, yva), epochs=10, batch_size=64, verbose=0)
print("head val", [round(v, 3) for v in h.history["val_accuracy"]], flush=True)
head_w = head.get_weights()
recipes = json.loads(sys.argv[1])
for name, n_layers, lr in recipes:
    bb, feat, head, model = fresh(); head.set_weights(head_w)
    bb.trainable = True
    total = len(bb.layers)
    for i, layer in enumerate(bb.layers):
        layer.trainable = i >= total - n_layers and not isinstance(layer, keras.layers.BatchNormalization)
    compile_classifier(model, lr)
    t = time.time()
    h = model.fit(pipe(xtr, ytr, True, True), validation_data=pipe(xva, yva), epochs=3, verbose=0)
    print(name, n_layers, lr, "val", [round(v, 3) for v in h.history["val_accuracy"]], "s", round(time.time() - t),
          flush=True)
