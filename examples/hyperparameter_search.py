"""Hyperparameter search with optuna or scikit-learn
=================================================

Hyperparameter search for fastmlp.MLPClassifier on a Fashion-MNIST subset (generated blob
images without the files): hidden size, learning rate and dropout, tuned with optuna's TPE
sampler (Bayesian optimisation) and median pruning, or with scikit-learn's RandomizedSearchCV
when optuna is not installed::

    python examples/hyperparameter_search.py            # 20 trials, 10,000 training images
    python examples/hyperparameter_search.py --quick    # 3 small trials, a few seconds
    python examples/hyperparameter_search.py --method random

Several processes (on one machine or many) can share one optuna study: start each with the same
--storage (a journal file on a shared file system, or a database URL) and --study-name; each
runs its --trials and proposes from everybody's results so far::

    python examples/hyperparameter_search.py --storage search.log --study-name s1 &
    python examples/hyperparameter_search.py --storage search.log --study-name s1
"""
import argparse
import os
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV, train_test_split

import fastmlp
from fastmlp import datasets

# The search space: one hidden layer of 32-512 units, Adam's learning rate, dropout.
HIDDEN_RANGE = (32, 512)
LR_RANGE = (1e-4, 3e-2)
DROPOUT_RANGE = (0.0, 0.5)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 3 trials of 3 epochs on 1,500 images")
    parser.add_argument("--method", choices=("optuna", "random"), default=None,
                        help="optuna (default when installed) or RandomizedSearchCV")
    parser.add_argument("--trials", type=int, default=None, help="configurations to try (20)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (15)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="training images, a stratified subset of the 60,000 (10,000)")
    parser.add_argument("--data", default=datasets.FASHION_MNIST_DIR,
                        help="directory of the Fashion-MNIST IDX files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storage", default=None,
                        help="share the optuna study through this journal file, or a database "
                             "URL such as sqlite:///search.db (default: in memory, this process)")
    parser.add_argument("--study-name", default="fastmlp-search",
                        help="the shared study's name (with --storage)")
    args = parser.parse_args(argv)
    quick = {"trials": 3, "epochs": 3, "train_size": 1500}
    full = {"trials": 20, "epochs": 15, "train_size": 10000}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.method is None:
        args.method = "optuna" if optuna_module() is not None else "random"
    if args.storage is not None and args.method != "optuna":
        parser.error("--storage shares an optuna study; it needs --method optuna")
    return args


def optuna_module():
    try:
        import optuna
    except ImportError:
        return None
    return optuna


def stratified_subset(X, y, n, seed):
    """n rows of (X, y) with the class proportions of y; all of them when n is not fewer."""
    if n >= len(y):  # train_test_split wants a proper subset
        return X, y
    X, _, y, _ = train_test_split(X, y, train_size=n, stratify=y, random_state=seed)
    return X, y


def load_subsets(args):
    """Stratified (train, validation, test) subsets; generated blob images without the files."""
    n_validation = max(args.train_size // 4, 10)
    (X, y, X_test, y_test), source = datasets.load_fashion_mnist_or_blob_images(
        args.data, n_train=args.train_size + n_validation, n_test=4 * n_validation, seed=args.seed)
    X, y = stratified_subset(X, y, args.train_size + n_validation, args.seed)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=n_validation,
                                                      stratify=y, random_state=args.seed)
    X_test, y_test = stratified_subset(X_test, y_test, 4 * n_validation, args.seed)
    return source, (X_train, y_train), (X_val, y_val), (X_test, y_test)


def classifier(args, hidden, learning_rate_init, dropout):
    return fastmlp.MLPClassifier(hidden_layer_sizes=(int(hidden),),
                                 learning_rate_init=float(learning_rate_init),
                                 dropout=float(dropout), batch_size=128, max_iter=args.epochs,
                                 random_state=args.seed)


def search_with_optuna(args, train, validation):
    """TPE proposes each configuration from the results so far; a trial whose validation
    accuracy after an epoch is below the median of earlier trials at that epoch is pruned."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (X_train, y_train), (X_val, y_val) = train, validation
    classes = np.unique(y_train)

    def objective(trial):
        trial.set_user_attr("process", os.getpid())  # which process ran it, in a shared study
        model = classifier(args, trial.suggest_int("hidden", *HIDDEN_RANGE, log=True),
                           trial.suggest_float("learning_rate_init", *LR_RANGE, log=True),
                           trial.suggest_float("dropout", *DROPOUT_RANGE))
        for epoch in range(args.epochs):  # one partial_fit call is one epoch
            model.partial_fit(X_train, y_train, classes=classes)
            accuracy = model.score(X_val, y_val)
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy

    study = create_or_load_study(optuna, args)
    study.optimize(objective, n_trials=args.trials)
    for trial in study.trials:  # a shared study's: other processes' too, some still running
        process = f" (process {trial.user_attrs.get('process')})" if args.storage else ""
        if trial.state == optuna.trial.TrialState.RUNNING:  # its parameters may be incomplete
            print(f"  trial {trial.number:2d}: running{process}")
            continue
        value = f"{trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
        print(f"  trial {trial.number:2d}: {format_params(trial.params)} -> {value}{process}")
    return study.best_params, study.best_value


def create_or_load_study(optuna, args):
    """An in-memory study, or the shared one in --storage (created by whichever process comes
    first). A shared study's proposals depend on when other processes finish their trials, so
    its sampler is not seeded: processes with one seed would propose the same first trials."""
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    sampler = optuna.samplers.TPESampler(seed=None if args.storage else args.seed,
                                         n_startup_trials=min(5, args.trials))
    if args.storage is None:
        return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner,
                               storage=shared_storage(optuna, args.storage),
                               study_name=args.study_name, load_if_exists=True)


def shared_storage(optuna, storage):
    """A database URL as it is (optuna's RDB storage); anything else names a journal file,
    which processes on one machine, or on machines sharing a file system, can append to."""
    if "://" in storage:
        return storage
    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # optuna 3.x
        from optuna.storages import JournalFileStorage as JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(storage))


def search_with_random_search(args, train, validation):
    """RandomizedSearchCV with the validation subset as its single split."""
    from scipy.stats import loguniform, uniform

    (X_train, y_train), (X_val, y_val) = train, validation
    X = np.concatenate([X_train, X_val])
    y = np.concatenate([y_train, y_val])
    split = PredefinedSplit(np.r_[np.full(len(y_train), -1), np.zeros(len(y_val), dtype=int)])
    distributions = {"hidden_layer_sizes": [(int(h),) for h in
                                            np.unique(np.geomspace(*HIDDEN_RANGE, 9).round())],
                     "learning_rate_init": loguniform(*LR_RANGE),
                     "dropout": uniform(DROPOUT_RANGE[0], DROPOUT_RANGE[1] - DROPOUT_RANGE[0])}
    search = RandomizedSearchCV(classifier(args, HIDDEN_RANGE[0], LR_RANGE[0], 0.0), distributions,
                                n_iter=args.trials, cv=split, refit=False, random_state=args.seed)
    search.fit(X, y)
    for params, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"]):
        print(f"  {format_params(unify(params))} -> {score:.4f}")
    return unify(search.best_params_), search.best_score_


def unify(params):
    """RandomizedSearchCV's parameter names -> the optuna search's."""
    params = dict(params)
    params["hidden"] = params.pop("hidden_layer_sizes")[0]
    return params


def format_params(params):
    return (f"hidden={params['hidden']:4d} lr={params['learning_rate_init']:.2e} "
            f"dropout={params['dropout']:.2f}")


def main(argv=None):
    """Run the search; return the best parameters and the validation and test accuracies."""
    args = parse_args(argv)
    source, train, validation, test = load_subsets(args)
    print(f"data: {source}; {len(train[1])} training, {len(validation[1])} validation, "
          f"{len(test[1])} test images")
    print(f"search: {args.method}, {args.trials} trials of up to {args.epochs} epochs")
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few epochs per trial, on purpose
        search = search_with_optuna if args.method == "optuna" else search_with_random_search
        best_params, best_validation = search(args, train, validation)
        final = classifier(args, best_params["hidden"], best_params["learning_rate_init"],
                           best_params["dropout"]).fit(*train)
    test_accuracy = final.score(*test)
    print(f"best: {format_params(best_params)}, validation accuracy {best_validation:.4f}, "
          f"test accuracy {test_accuracy:.4f} ({time.perf_counter() - started:.1f}s)")
    return {"method": args.method, "best_params": best_params,
            "validation_accuracy": best_validation, "test_accuracy": test_accuracy}


if __name__ == "__main__":
    main()
