"""A model function of one's own: Dropout between Dense layers and a learning-rate argument.

Its input width comes from `meta` (foldflow passes it, as scikeras does), so it fits any
dataset; the fast engine trains it (Dropout's rate is a per-model setting there).
"""

import keras


def create_model(meta, units=12, dropout=0.2, learning_rate=0.001, optimizer="adam"):
    model = keras.Sequential(
        [
            keras.Input(shape=(meta["n_features_in_"],)),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    optimizer = keras.optimizers.get(
        {"class_name": optimizer, "config": {"learning_rate": learning_rate}}
    )
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model
