// Bench harness (not product code): runs Debezium's PostgreSQL connector in Debezium's
// embedded engine, serialising every record with Kafka Connect's JsonConverter (schemas off,
// as tidemark's null output writes JSON) and discarding it, until <records> change records
// arrived; then prints one JSON line of timings to stdout and exits.
//
//   java -cp '<libs>/*' DebeziumDrain.java <connector.properties> <records> <timeout-ms>
//
// Printed: {"records", "start_to_last_s" (engine start to the last record),
// "first_to_last_s" (first record to the last), "cpu_first_to_last_s" (this JVM's CPU time
// over the same span, every thread), "cpu_total_s" (since the JVM started, JIT and
// start-up included)}. Exit status 0 when the records arrived, 2 on the timeout, 1 when the
// engine failed (its error on stderr).

import java.io.FileInputStream;
import java.lang.management.ManagementFactory;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.format.Json;

public class DebeziumDrain {

    private static long cpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: DebeziumDrain <connector.properties> <records> <timeout-ms>");
            System.exit(64);
        }
        Properties props = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            props.load(in);
        }
        props.setProperty("converter.schemas.enable", "false");
        long wanted = Long.parseLong(args[1]);
        long timeoutMs = Long.parseLong(args[2]);

        AtomicLong count = new AtomicLong();
        AtomicLong bytes = new AtomicLong();
        long[] first = new long[2];
        long[] last = new long[2];
        CountDownLatch done = new CountDownLatch(1);
        AtomicReference<Throwable> failure = new AtomicReference<>();
        DebeziumEngine<ChangeEvent<String, String>> engine = DebeziumEngine.create(Json.class)
                .using(props)
                .notifying(event -> {
                    // Change records only: the serialised value is what a consumer reads.
                    String value = event.value();
                    if (value == null) {
                        return;
                    }
                    bytes.addAndGet(value.length() + (event.key() == null ? 0 : event.key().length()));
                    long n = count.incrementAndGet();
                    if (n == 1) {
                        first[0] = System.nanoTime();
                        first[1] = cpuNanos();
                    }
                    if (n == wanted) {
                        last[0] = System.nanoTime();
                        last[1] = cpuNanos();
                        done.countDown();
                    }
                })
                .using((success, message, error) -> {
                    if (!success) {
                        failure.set(error != null ? error : new RuntimeException(message));
                        done.countDown();
                    }
                })
                .build();
        ExecutorService executor = Executors.newSingleThreadExecutor();
        long start = System.nanoTime();
        executor.execute(engine);
        boolean arrived = done.await(timeoutMs, TimeUnit.MILLISECONDS);
        int status = failure.get() != null ? 1 : arrived ? 0 : 2;
        if (status == 0) {
            System.out.printf(
                    "{\"records\":%d,\"bytes\":%d,\"start_to_last_s\":%.6f,\"first_to_last_s\":%.6f,\"cpu_first_to_last_s\":%.6f,\"cpu_total_s\":%.6f}%n",
                    count.get(), bytes.get(), (last[0] - start) / 1e9, (last[0] - first[0]) / 1e9,
                    (last[1] - first[1]) / 1e9, last[1] / 1e9);
        } else if (status == 1) {
            System.err.println("the Debezium engine failed: " + failure.get());
            failure.get().printStackTrace();
        } else {
            System.err.println("timed out with " + count.get() + " of " + wanted + " records");
        }
        System.out.flush();
        engine.close();
        executor.shutdown();
        executor.awaitTermination(30, TimeUnit.SECONDS);
        System.exit(status);
    }
}
