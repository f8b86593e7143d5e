"""``zoo`` commands beyond Lightning's fit/validate/test/predict, one module each with a ``main(argv)``."""
