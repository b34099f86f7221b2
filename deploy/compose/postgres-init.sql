-- One database per service, made on PostgreSQL's first start.
CREATE DATABASE easel_auth;
CREATE DATABASE easel_jobs;
CREATE DATABASE easel_storage;
