-- One PostgreSQL database per modelgate service, each owned by its own login role, so a service can
-- reach no other service's data. Run once by the postgres image's entrypoint on an empty data
-- directory (docker-compose.yml mounts this file into /docker-entrypoint-initdb.d/).
-- The passwords are for the local compose setup only; on AWS the template creates the databases
-- (see docs/deploy-aws.md) and keeps the credentials in Secrets Manager.

CREATE ROLE registrar LOGIN PASSWORD 'registrar';
CREATE DATABASE registrar OWNER registrar;
REVOKE ALL ON DATABASE registrar FROM PUBLIC;

CREATE ROLE approver LOGIN PASSWORD 'approver';
CREATE DATABASE approver OWNER approver;
REVOKE ALL ON DATABASE approver FROM PUBLIC;

CREATE ROLE deployer LOGIN PASSWORD 'deployer';
CREATE DATABASE deployer OWNER deployer;
REVOKE ALL ON DATABASE deployer FROM PUBLIC;

CREATE ROLE notifier LOGIN PASSWORD 'notifier';
CREATE DATABASE notifier OWNER notifier;
REVOKE ALL ON DATABASE notifier FROM PUBLIC;
