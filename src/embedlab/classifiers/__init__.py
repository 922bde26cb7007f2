"""The two fixed classifiers, the evaluator (it scores) and the backbone (methods guide with,
distil from or embed with it): a package laid out like a method's (nets, training, method)."""
