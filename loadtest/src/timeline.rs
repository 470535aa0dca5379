//! Admitted and drained per second over a spike, for the JSON report and an SVG chart: people
//! would rather look at the stampede than read it.

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use plotters::prelude::*;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// Per-second counts from the sale's start (index 0 is the first second).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// Tickets the door admitted (202) in each second, as the buyers saw the answers.
    pub admitted_per_second: Vec<u64>,
    /// Orders the workers created in each second (PostgreSQL's clock).
    pub drained_per_second: Vec<u64>,
}

/// Counts moments (milliseconds after the start) per whole second; earlier ones are dropped.
pub fn per_second(moments_ms: impl IntoIterator<Item = f64>) -> Vec<u64> {
    let mut counts: Vec<u64> = Vec::new();
    for ms in moments_ms {
        if !(ms >= 0.0 && ms.is_finite()) {
            continue;
        }
        let second = (ms / 1000.0) as usize;
        if counts.len() <= second {
            counts.resize(second + 1, 0);
        }
        counts[second] += 1;
    }
    counts
}

impl Timeline {
    /// The timeline of `sale`: admissions from the buyers' answers, orders from PostgreSQL.
    ///
    /// # Errors
    /// When PostgreSQL fails.
    pub async fn measure(
        db: &PgPool,
        sale: Uuid,
        starts_at: DateTime<Utc>,
        admitted_ms: &[f64],
    ) -> anyhow::Result<Self> {
        let created: Vec<f64> = sqlx::query_scalar(
            "select extract(epoch from created_at - $2)::float8 * 1000 from orders
             where flash_sale_id = $1",
        )
        .bind(sale)
        .bind(starts_at)
        .fetch_all(db)
        .await?;
        Ok(Self {
            admitted_per_second: per_second(admitted_ms.iter().copied()),
            drained_per_second: per_second(created),
        })
    }

    /// The two series as an SVG line chart.
    ///
    /// # Errors
    /// When plotters cannot lay the chart out (it needs no fonts for SVG).
    pub fn svg(&self, title: &str) -> anyhow::Result<String> {
        let seconds = self
            .admitted_per_second
            .len()
            .max(self.drained_per_second.len())
            .max(1);
        let peak = self
            .admitted_per_second
            .iter()
            .chain(&self.drained_per_second)
            .copied()
            .max()
            .unwrap_or(0)
            .max(1);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_error)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(64)
                .build_cartesian_2d(0..seconds, 0..peak + peak / 10 + 1)
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .x_desc("seconds after the sale's start")
                .y_desc("per second")
                .draw()
                .map_err(plot_error)?;
            for (name, series, color) in [
                ("admitted (202)", &self.admitted_per_second, BLUE),
                ("drained (orders)", &self.drained_per_second, RED),
            ] {
                chart
                    .draw_series(LineSeries::new(
                        series.iter().enumerate().map(|(s, n)| (s, *n)),
                        color.stroke_width(2),
                    ))
                    .map_err(plot_error)?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE)
                .border_style(BLACK)
                .draw()
                .map_err(plot_error)?;
            root.present().map_err(plot_error)?;
        }
        Ok(svg)
    }

    /// Writes [`Timeline::svg`] to `path`.
    ///
    /// # Errors
    /// When the chart cannot be drawn or the file written.
    pub fn write_svg(&self, title: &str, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.svg(title)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

fn plot_error(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_counted_per_whole_second_and_early_ones_dropped() {
        let counts = per_second([0.0, 999.9, 1000.0, 3500.0, -5.0, f64::NAN]);
        assert_eq!(counts, [2, 1, 0, 1]);
        assert!(per_second([]).is_empty());
    }

    #[test]
    fn the_chart_shows_both_series_with_their_names() {
        let timeline = Timeline {
            admitted_per_second: vec![4000, 900],
            drained_per_second: vec![300, 2000, 1500],
        };

        let svg = timeline.svg("spike").unwrap();

        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("admitted (202)") && svg.contains("drained (orders)"));
        // Each series is a polyline with a point per second (its legend line has two points).
        let points = |colour: &str| {
            svg.split("/>")
                .filter(|e| e.contains("<polyline") && e.contains(colour))
                .map(|e| e.matches(',').count())
                .max()
                .unwrap_or(0)
        };
        assert_eq!(points("#0000FF"), 2, "admitted: two seconds");
        assert_eq!(points("#FF0000"), 3, "drained: three seconds");
    }

    #[test]
    fn an_empty_run_still_draws() {
        assert!(Timeline::default().svg("nothing").is_ok());
    }
}
