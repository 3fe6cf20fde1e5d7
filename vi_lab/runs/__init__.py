"""Runs: everything around a training run's step, and what the run leaves on disk.

`schedule` gives the step size and KL weight at a step; `window` checks and reduces the
logged terms between log points; `checkpoint` writes checkpoints atomically with their
SHA-256 digests and verifies them on reading; `resume` decides what a resumed run may change
and restores it; `stopping` turns SIGTERM/SIGINT into a clean stop between steps; `lock`
keeps one writer per run folder; `board` writes TensorBoard (HParams sessions and
experiment), PNG (Pillow) and JSON files; `figures` renders matplotlib figures to PNG and
TensorBoard; `folder` names, checks and claims run folders and loads trained runs; `outputs`
writes the files of the uses. No evaluation code: these are the run's mechanics and its I/O.
"""
