// Test harness (not product code): runs Debezium's PostgreSQL connector in Debezium's
// embedded engine and writes every record it produces to a file, one JSON object per line,
// so tidemark's tests can compare tidemark's records with Debezium's.
//
//   java -cp '<libs>/*' DebeziumRecords.java <connector.properties> <out.jsonl> <idle-ms> <timeout-ms>
//
// Each line: {"topic", "partition", "key", "key_text", "value", "key_plain", "key_plain_text",
// "value_plain", "headers"}, where key/value are what Kafka Connect's JsonConverter writes with
// schemas.enable=true ({"schema", "payload"}), key_text the key's bytes as that text (what the
// partitioner hashes), key_plain/value_plain with schemas.enable=false (key_plain_text its
// bytes as text), and headers a list
// of {"key", "value"}, the value the text Kafka Connect's default header converter
// (SimpleHeaderConverter, a worker's `header.converter` unless set) writes. The engine stops
// once it has produced at least one record and then none for <idle-ms> (heartbeats, which
// come while it is idle, are written but do not count), or after <timeout-ms> in all; the
// exit status is 0 when it stopped on idle, 2 on the timeout, 1 when the engine failed (its
// error on stderr).

import java.io.FileInputStream;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.json.JsonConverter;
import org.apache.kafka.connect.storage.SimpleHeaderConverter;
import org.apache.kafka.connect.source.SourceRecord;

import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.RecordChangeEvent;
import io.debezium.engine.format.ChangeEventFormat;

public class DebeziumRecords {

    private static JsonConverter converter(boolean schemas, boolean isKey) {
        JsonConverter converter = new JsonConverter();
        converter.configure(Map.of("schemas.enable", String.valueOf(schemas)), isKey);
        return converter;
    }

    private static String quote(String text) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }

    private static String json(byte[] bytes) {
        return bytes == null ? "null" : new String(bytes, StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: DebeziumRecords <connector.properties> <out.jsonl> <idle-ms> <timeout-ms>");
            System.exit(64);
        }
        Properties props = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            props.load(in);
        }
        long idleMs = Long.parseLong(args[2]);
        long timeoutMs = Long.parseLong(args[3]);

        JsonConverter keySchemas = converter(true, true);
        JsonConverter valueSchemas = converter(true, false);
        JsonConverter keyPlain = converter(false, true);
        JsonConverter valuePlain = converter(false, false);
        SimpleHeaderConverter headers = new SimpleHeaderConverter();
        headers.configure(Map.of());

        AtomicLong count = new AtomicLong();
        AtomicLong last = new AtomicLong(System.currentTimeMillis());
        AtomicReference<Throwable> failure = new AtomicReference<>();
        try (PrintWriter out = new PrintWriter(Files.newBufferedWriter(Path.of(args[1]), StandardCharsets.UTF_8))) {
            DebeziumEngine<RecordChangeEvent<SourceRecord>> engine = DebeziumEngine
                    .create(ChangeEventFormat.of(io.debezium.embedded.Connect.class))
                    .using(props)
                    .notifying(event -> {
                        SourceRecord r = event.record();
                        StringBuilder line = new StringBuilder("{\"topic\":").append(quote(r.topic()));
                        line.append(",\"partition\":").append(r.kafkaPartition());
                        String key = json(keySchemas.fromConnectData(r.topic(), r.keySchema(), r.key()));
                        line.append(",\"key\":").append(key);
                        line.append(",\"key_text\":").append(r.key() == null ? "null" : quote(key));
                        line.append(",\"value\":").append(json(valueSchemas.fromConnectData(r.topic(), r.valueSchema(), r.value())));
                        String keyPlainText = json(keyPlain.fromConnectData(r.topic(), r.keySchema(), r.key()));
                        line.append(",\"key_plain\":").append(keyPlainText);
                        line.append(",\"key_plain_text\":").append(r.key() == null ? "null" : quote(keyPlainText));
                        line.append(",\"value_plain\":").append(json(valuePlain.fromConnectData(r.topic(), r.valueSchema(), r.value())));
                        line.append(",\"headers\":[");
                        boolean first = true;
                        for (Header h : r.headers()) {
                            if (!first) {
                                line.append(',');
                            }
                            first = false;
                            line.append("{\"key\":").append(quote(h.key())).append(",\"value\":")
                                    .append(quote(new String(headers.fromConnectHeader(r.topic(), h.key(), h.schema(), h.value()), StandardCharsets.UTF_8))).append('}');
                        }
                        line.append("]}");
                        synchronized (out) {
                            out.println(line);
                            out.flush();
                        }
                        boolean heartbeat = r.valueSchema() != null
                                && "io.debezium.connector.common.Heartbeat".equals(r.valueSchema().name());
                        if (!heartbeat) {
                            count.incrementAndGet();
                            last.set(System.currentTimeMillis());
                        }
                    })
                    .using((success, message, error) -> {
                        if (!success) {
                            failure.set(error != null ? error : new RuntimeException(message));
                        }
                    })
                    .build();
            ExecutorService executor = Executors.newSingleThreadExecutor();
            executor.execute(engine);
            long start = System.currentTimeMillis();
            int status = 2;
            while (System.currentTimeMillis() - start < timeoutMs) {
                Thread.sleep(100);
                if (failure.get() != null) {
                    status = 1;
                    break;
                }
                if (count.get() > 0 && System.currentTimeMillis() - last.get() >= idleMs) {
                    status = 0;
                    break;
                }
            }
            engine.close();
            executor.shutdown();
            executor.awaitTermination(30, TimeUnit.SECONDS);
            if (failure.get() != null) {
                System.err.println("the Debezium engine failed: " + failure.get());
                failure.get().printStackTrace();
                status = 1;
            }
            System.err.println("records: " + count.get());
            out.flush();
            System.exit(status);
        }
    }
}
