"""init() sets what lives in context variables (decimal's context, numpy's error state); run() reads it."""
import decimal

import numpy as np


def init():
    decimal.getcontext().prec = 5
    np.seterr(all="raise")


def run(raw_data):
    return {"third": str(decimal.Decimal(1) / decimal.Decimal(3)), "numpy_divide": np.geterr()["divide"]}
