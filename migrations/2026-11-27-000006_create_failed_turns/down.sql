DROP TABLE failed_turns;
