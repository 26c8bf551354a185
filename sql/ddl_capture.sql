-- tidemark DDL capture: event triggers that write every table DDL command into the WAL as a
-- transactional logical message (prefix 'tidemark.ddl'), so it reaches the replication stream
-- at its exact place among the data changes. Installed by `tidemark setup` when
-- source.ddl_capture = true; needs a superuser (event triggers always do). Idempotent.
CREATE SCHEMA IF NOT EXISTS tidemark;

CREATE OR REPLACE FUNCTION tidemark.capture_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
DECLARE
  command record;
  objects jsonb := '[]';
  tables jsonb := '[]';
BEGIN
  FOR command IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    CONTINUE WHEN command.object_type NOT IN ('table', 'table column')
      OR command.in_extension
      OR command.schema_name IN ('pg_catalog', 'information_schema', 'tidemark')
      OR command.schema_name LIKE 'pg_temp%';
    objects := objects || jsonb_build_object(
      'object_type', command.object_type, 'relid', command.objid::bigint, 'attnum', command.objsubid);
    tables := tables || COALESCE((
      SELECT jsonb_build_array(jsonb_build_object(
        'relid', c.oid::bigint, 'schema', n.nspname, 'table', c.relname,
        'columns', COALESCE((
          SELECT jsonb_agg(jsonb_build_object(
            'attnum', a.attnum, 'name', a.attname, 'typname', t.typname, 'typmod', a.atttypmod,
            'not_null', a.attnotnull,
            'key', COALESCE(a.attnum = ANY (i.indkey::int2[]), false)) ORDER BY a.attnum)
          FROM pg_attribute a
          JOIN pg_type t ON t.oid = a.atttypid
          LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]')))
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid = command.objid AND c.relkind IN ('r', 'p')), '[]');
  END LOOP;
  IF jsonb_array_length(objects) > 0 THEN
    PERFORM pg_logical_emit_message(true, 'tidemark.ddl', jsonb_build_object(
      'event', 'ddl_command_end', 'tag', tg_tag, 'statement', current_query(),
      'objects', objects, 'tables', tables)::text);
  END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION tidemark.capture_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
DECLARE
  dropped jsonb;
BEGIN
  SELECT jsonb_agg(jsonb_build_object('relid', objid::bigint, 'schema', schema_name, 'table', object_name))
    INTO dropped
    FROM pg_event_trigger_dropped_objects()
    WHERE object_type = 'table' AND NOT is_temporary
      AND schema_name NOT IN ('pg_catalog', 'information_schema', 'tidemark');
  IF dropped IS NOT NULL THEN
    PERFORM pg_logical_emit_message(true, 'tidemark.ddl', jsonb_build_object(
      'event', 'sql_drop', 'tag', tg_tag, 'statement', current_query(), 'dropped', dropped)::text);
  END IF;
END
$fn$;

DROP EVENT TRIGGER IF EXISTS tidemark_ddl_capture;
CREATE EVENT TRIGGER tidemark_ddl_capture ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE TABLE AS', 'SELECT INTO')
  EXECUTE FUNCTION tidemark.capture_ddl();
DROP EVENT TRIGGER IF EXISTS tidemark_drop_capture;
CREATE EVENT TRIGGER tidemark_drop_capture ON sql_drop
  WHEN TAG IN ('DROP TABLE')
  EXECUTE FUNCTION tidemark.capture_drop();
