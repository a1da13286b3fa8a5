"""Benchmarks for coterie: each module measures one subsystem beside a raw baseline run in the
same process tree, so results are ratios that survive a noisy machine."""
