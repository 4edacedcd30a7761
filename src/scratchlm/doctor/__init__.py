"""The troubleshooting doctor: detectors for common training problems, live and after the fact.

detectors.py  one class per symptom (initial loss, not decreasing, NaN/exploding,
              repetition, too slow, overfitting) and the thresholds they use
live.py       attaches the detectors to a training run's events
records.py    reads a run folder's metrics back and replays them
diagnose.py   the troubleshooting table for a run folder (`scratchlm doctor RUN_DIR`)
"""
