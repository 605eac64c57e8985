#!/bin/bash
# Worker for the --no-python ports (torch's test/distributed/launcher/bin/test_script.sh):
# touches $1/$RANK.
FILE="$1/$RANK"
echo "creating $FILE"
touch "$FILE"
