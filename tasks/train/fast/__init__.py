"""Fast engine: many MLP fits trained at once as one compiled TensorFlow program.

The tutorial's fits are tiny (an 8-12-8-1 MLP), so their time goes to per-step and per-fit
overhead, not arithmetic. This engine removes both while reproducing the reference engine
(one scikeras fit per fold) step for step:

* weights of M models are stacked (`[M, P]` flat vectors) and every step updates all of them
  with batched matmuls, inside one XLA-compiled `tf.while_loop` (~0.01 ms/step alone, ~3 us
  more per stacked model, against ~1.5 ms/step for a Keras fit);
* each model keeps its own rows, batch order (`epoch_order`), batch size, optimizer and
  Keras' exact update rule; padding rows (-1) carry no weight and a model without real rows
  in a step is not updated at all (Adam's step counter and moments only advance on real steps);
* epochs are prefixes (the fit seed ignores epochs), so jobs differing only in epochs share
  one trajectory and are scored at checkpoints;
* preprocessing (fitted per fold on its training rows) gives a trajectory its own feature
  matrix: a program holds one stacked copy per distinct (fold, preprocessing) and each model's
  row indices point into its own copy, so the arithmetic is the same as with a single matrix.

What it trains is what inspection of the user's model found (tasks.model.inspection): a chain of
Dense layers with their own widths, activations, biases and L1/L2 regularizers; a sigmoid
(binary cross-entropy), softmax (sparse or one-hot categorical cross-entropy) or linear (MSE,
MAE) output; class weights; and any Keras optimizer foldflow offers (SGD, RMSprop, Adam/AdamW,
Adagrad, Adadelta, Adamax, Nadam) with its settings, weight decay and clipvalue, in Keras'
own op order. SGD, RMSprop and Adam share programs (each model its own rule and settings);
any other optimizer has programs of its own. Initial weights are
the ones the model function builds under the fit's seed. Dropout on a Dense layer's input
is Keras' inverted dropout in training steps only (never when predicting, scoring or
validating), its mask drawn from a counter-based hash of (fit seed, step, layer, batch slot,
unit): it does not depend on the other models of a program, and a continued run draws what
the uninterrupted one would (its masks match Keras' statistically, not bit for bit).
Between Dense layers: BatchNormalization (each model's statistics over its own real batch rows,
its moving averages in the flat vector, replaced after each step and used when predicting),
LayerNormalization, Activation, and GaussianNoise / GaussianDropout (training only, normals
from the same hash). Keras' learning-rate schedules are evaluated per model and step (rates).
Anything else (EMA, other layers) runs on the reference engine (tasks.train.reference).

Where each part lives, one reason to change per module:

* planning: which jobs share a program and how a run's groups are cut (pure Python: the flow
  plans before any training, without TensorFlow);
* schedules: trajectories (one training run each) and their batch rows per step (numpy);
* network: the flat parameter layout, the batched forward pass, dropout, losses, outputs;
* optimizers: the port of Keras' optimizers (update rules, weight decay, clipping);
* rates: each model's learning rate per step (Keras' schedules at its own iterations);
* programs: the compiled train and predict programs, their cache, tracing ahead in order;
* callbacks: early stopping and the learning curves, per model of a group;
* trainer: train_stacked and train_on_all_rows, which run the programs and score the fits.
"""
