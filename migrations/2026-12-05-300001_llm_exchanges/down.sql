DROP TABLE llm_exchanges;
