use flash_core::jobs::{EmailJob, EmailMessage};
use sqlx::PgPool;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};
use uuid::Uuid;
use workers::{Delivery, Emails};

use crate::helpers::Env;

async fn publish(env: &Env, job: &EmailJob, msg_id: &str) {
    let subject = format!("{}{}", env.iso.nats.nats_subject_prefix, EmailJob::SUBJECT);
    flash_core::nats::publish_durably(
        &env.js,
        subject,
        msg_id,
        serde_json::to_vec(job).unwrap().into(),
        None,
    )
    .await
    .unwrap();
}

async fn run(emails: &Emails) {
    for _ in 0..20 {
        if emails.run_once().await.unwrap() == 0 {
            return;
        }
    }
    panic!("email jobs never ran out");
}

fn job() -> EmailJob {
    EmailJob {
        email_id: Uuid::now_v7(),
        member_id: None,
        to: "ann@example.com".into(),
        message: EmailMessage::OrderConfirmation {
            order_id: Uuid::nil().into(),
            total_cents: 12_900,
            currency: "EUR".into(),
        },
    }
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_email_is_delivered_once_even_when_its_job_is_redelivered(db: PgPool) {
    let env = Env::new(db, 1, 1).await;
    let folder = std::env::temp_dir().join(format!("mail-{}", Uuid::new_v4()));
    let emails = env.emails(Delivery::Folder(folder.clone()), 3).await;
    let job = job();

    publish(&env, &job, "first").await;
    run(&emails).await;
    publish(&env, &job, "again").await;
    run(&emails).await;

    let files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        files,
        [std::ffi::OsString::from(format!("{}.eml", job.email_id))]
    );
    let mail = std::fs::read_to_string(folder.join(format!("{}.eml", job.email_id))).unwrap();
    assert!(
        mail.contains("To: ann@example.com\r\n")
            && mail.contains("Subject: Your order is confirmed"),
        "{mail}"
    );
    assert!(mail.contains("129.00 EUR"), "{mail}");
    let (status, attempts): (String, i32) = sqlx::query_as("select status, attempts from emails")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!((status.as_str(), attempts), ("sent", 1));
    std::fs::remove_dir_all(&folder).unwrap();
    env.cleanup().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn one_batch_records_and_sends_each_email_once(db: PgPool) {
    let env = Env::new(db, 1, 1).await;
    let folder = std::env::temp_dir().join(format!("mail-{}", Uuid::new_v4()));
    let emails = env.emails(Delivery::Folder(folder.clone()), 3).await;
    let mut jobs: Vec<EmailJob> = (0..5).map(|_| job()).collect();
    // A member deleted since the job was queued must not hold up the batch.
    jobs[1].member_id = Some(flash_core::domain::MemberId::new());
    for (i, job) in jobs.iter().enumerate() {
        publish(&env, job, &format!("job-{i}")).await;
    }
    // The first job once more, in the same batch.
    publish(&env, &jobs[0], "job-0-again").await;

    assert_eq!(
        emails.run_once().await.unwrap(),
        6,
        "one batch took every job"
    );
    run(&emails).await;

    let mut files: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = jobs.iter().map(|j| format!("{}.eml", j.email_id)).collect();
    expected.sort();
    assert_eq!(files, expected);
    let sent: Vec<(String, i32)> =
        sqlx::query_as("select status, attempts from emails order by email_id")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(
        sent,
        vec![("sent".to_owned(), 1); 5],
        "recorded and sent once each"
    );
    let members: i64 = sqlx::query_scalar("select count(member_id) from emails")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(members, 0, "the deleted member is recorded as none");
    std::fs::remove_dir_all(&folder).unwrap();
    env.cleanup().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_email_that_cannot_be_delivered_is_dead_lettered(db: PgPool) {
    let env = Env::new(db, 1, 1).await;
    // A file where the folder should be: every delivery fails.
    let blocked = std::env::temp_dir().join(format!("not-a-folder-{}", Uuid::new_v4()));
    std::fs::write(&blocked, "x").unwrap();
    let emails = env.emails(Delivery::Folder(blocked.clone()), 1).await;

    publish(&env, &job(), "only").await;
    run(&emails).await;

    let (status, error): (String, Option<String>) =
        sqlx::query_as("select status, last_error from emails")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(status, "dead");
    assert!(error.is_some());
    std::fs::remove_file(&blocked).unwrap();
    env.cleanup().await;
}

/// A minimal SMTP server that accepts one message and hands back its DATA.
async fn smtp_sink() -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 sink ESMTP\r\n").await.unwrap();
        let mut data = String::new();
        let mut in_data = false;
        while let Some(line) = lines.next_line().await.unwrap() {
            if in_data {
                if line == "." {
                    in_data = false;
                    write.write_all(b"250 queued\r\n").await.unwrap();
                } else {
                    data.push_str(&line);
                    data.push('\n');
                }
                continue;
            }
            let verb = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 sink\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go ahead\r\n"
                }
                "QUIT" => {
                    write.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                }
                _ => b"250 ok\r\n",
            };
            write.write_all(reply).await.unwrap();
        }
        data
    });
    (url, server)
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn with_an_smtp_url_mail_goes_to_the_smtp_server(db: PgPool) {
    let env = Env::new(db, 1, 1).await;
    let (url, server) = smtp_sink().await;
    let emails = env
        .emails(
            Delivery::from_config(Some(&url), std::env::temp_dir()).unwrap(),
            3,
        )
        .await;
    let job = job();

    publish(&env, &job, "smtp").await;
    run(&emails).await;

    let data = tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert!(data.contains("Subject: Your order is confirmed"), "{data}");
    assert!(data.contains("To: ann@example.com"), "{data}");
    let status: String = sqlx::query_scalar("select status from emails")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(status, "sent");
    env.cleanup().await;
}
