DROP TABLE relay_state;
