"""Runs: everything a training run leaves on disk and how it is read back.

`folder` loads a trained run; `checkpoint` writes and checks checkpoints atomically;
`resume` decides what a resumed run may change; `board` writes TensorBoard (HParams sessions
and experiment), PNG and JSON files; `figures` renders matplotlib figures to PNG and
TensorBoard; `outputs` the files of the uses; `stopping` turns SIGTERM/SIGINT
into a clean stop. No evaluation code: this is run-folder I/O only.
"""
