# The tutorial's grid search ("Use Keras Deep Learning Models with Scikit-Learn"), ported to
# scikeras and Keras 3 as users run it today, with one import changed:
#     from sklearn.model_selection import GridSearchCV  ->  from foldflow import GridSearchCV
# Every fit runs as a Prefect flow (fast engine), cached by the data's and the code's bytes.
# Run it beside pima-indians-diabetes.csv: python tutorial_grid_search.py
import numpy
from keras.layers import Dense
from keras.models import Sequential
from scikeras.wrappers import KerasClassifier

from foldflow import GridSearchCV


# Function to create model, required for KerasClassifier
def create_model(optimizer="rmsprop", init="glorot_uniform"):
    # create model
    model = Sequential()
    model.add(Dense(12, input_dim=8, kernel_initializer=init, activation="relu"))
    model.add(Dense(8, kernel_initializer=init, activation="relu"))
    model.add(Dense(1, kernel_initializer=init, activation="sigmoid"))
    # Compile model
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


# fix random seed for reproducibility
seed = 7
numpy.random.seed(seed)
# load pima indians dataset
dataset = numpy.loadtxt("pima-indians-diabetes.csv", delimiter=",")
# split into input (X) and output (Y) variables
X = dataset[:, 0:8]
Y = dataset[:, 8]
# create model
model = KerasClassifier(model=create_model, verbose=0)
# grid search epochs, batch size and optimizer
optimizers = ["rmsprop", "adam"]
init = ["glorot_uniform", "normal", "uniform"]
epochs = [50, 100, 150]
batches = [5, 10, 20]
param_grid = dict(model__optimizer=optimizers, epochs=epochs, batch_size=batches, model__init=init)
grid = GridSearchCV(estimator=model, param_grid=param_grid)
grid_result = grid.fit(X, Y)
# summarize results
print("Best: %f using %s" % (grid_result.best_score_, grid_result.best_params_))
means = grid_result.cv_results_["mean_test_score"]
stds = grid_result.cv_results_["std_test_score"]
params = grid_result.cv_results_["params"]
for mean, stdev, param in zip(means, stds, params):
    print("%f (%f) with: %r" % (mean, stdev, param))
