"""Tools built on the library (Dai et al., "Attentional Feature Fusion", WACV 2021): speed
(:mod:`.benchmark`), training comparisons with GluonCV baselines (:mod:`.compare`), evaluation
(:mod:`.evaluate`), ONNX export (:mod:`.export`), attention maps (:mod:`.cam`), parameter and
FLOP tables (:mod:`.summary`), log plots (:mod:`.plotlog`) and the parameter-server launcher
(:mod:`.launch`). Their commands are in :mod:`openaff.cli`."""
