#!/usr/bin/env bash
# A multi-node Slurm cluster on this host, one network namespace per node (as root):
#
#   scripts/local-cluster.sh up N [--rate 100mbit] [--dir DIR]   start nodes n1..nN, then exit
#   eval "$(scripts/local-cluster.sh env)"                        point Slurm's clients at it
#   scripts/local-cluster.sh status | down [--dir DIR]            show it / remove all of it
#
# PYTHON names the interpreter (default python3; the script needs only the standard library).
exec "${PYTHON:-python3}" "$(dirname "$0")/local_cluster.py" "$@"
