class ScalarMix: pass
