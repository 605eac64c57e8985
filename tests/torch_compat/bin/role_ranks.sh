#!/bin/bash
# Worker for the rank-assignment port: writes what the agent gave it to $1/$RANK, as
# "LOCAL_RANK ROLE_RANK RANK WORLD_SIZE ROLE_WORLD_SIZE ROLE_NAME GROUP_RANK".
echo "$LOCAL_RANK $ROLE_RANK $RANK $WORLD_SIZE $ROLE_WORLD_SIZE $ROLE_NAME $GROUP_RANK" > "$1/$RANK"
