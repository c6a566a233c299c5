# Source: microsoft/MLOpsPython diabetes_regression/scoring/scoreA.py
#         @ 12eafba4f2eb77737b1bfae234b8d2edff39c447 (MIT)
# Contract kept: an init() that loads nothing and a run(raw_data) answering a fixed string (the A/B
# deployment test of that repository tells the two services apart by it).
def init():
    global model


def run(raw_data):
    return "New Model A"
