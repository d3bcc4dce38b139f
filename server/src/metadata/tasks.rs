//! Background tasks (SPEC O6): long operations the cluster carries out on its own, with a
//! status anyone can read from any broker. A reassignment (AlterPartitionReassignments
//! from any tool: `kafka-reassign-partitions`, `ringmq reassign`, `ringmq cluster
//! drain`) becomes a task when the controller starts it; the active controller marks it
//! Succeeded once every one of its partitions sits on its target replicas, or Cancelled
//! when a partition's move was cancelled or replaced. Tasks are metadata records, so they
//! survive a controller failover; the last [`FINISHED_KEPT`] finished ones are kept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metadata::{MetadataImage, MetadataRecord};

/// Finished tasks kept in the metadata image (the oldest go first).
pub const FINISHED_KEPT: usize = 100;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum TaskState {
    Running,
    Succeeded,
    Cancelled,
}

/// One partition a task moves, and where to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskPartition {
    pub topic: String,
    pub partition: i32,
    pub target: Vec<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Task {
    pub id: u64,
    pub kind: String,
    pub description: String,
    pub state: TaskState,
    pub created_ms: i64,
    #[serde(default)]
    pub finished_ms: Option<i64>,
    pub partitions: Vec<TaskPartition>,
}

impl Task {
    /// A reassignment task for `partitions` (topic, partition, target replicas).
    pub fn reassignment(id: u64, partitions: Vec<TaskPartition>, now_ms: i64) -> Task {
        let mut topics: Vec<&str> = partitions.iter().map(|p| p.topic.as_str()).collect();
        topics.dedup();
        let description = format!(
            "reassign {} partition(s) of {}",
            partitions.len(),
            topics.join(", ")
        );
        Task {
            id,
            kind: "reassignment".into(),
            description,
            state: TaskState::Running,
            created_ms: now_ms,
            finished_ms: None,
            partitions,
        }
    }

    /// Partitions whose move is still in progress.
    pub fn moving(&self, image: &MetadataImage) -> usize {
        self.partitions
            .iter()
            .filter(|p| {
                image
                    .topic(&p.topic)
                    .and_then(|t| t.state(p.partition))
                    .is_some_and(|s| s.reassigning())
            })
            .count()
    }

    /// The state this task has reached in `image`, if it has finished.
    fn outcome(&self, image: &MetadataImage) -> Option<TaskState> {
        if self.state != TaskState::Running || self.moving(image) > 0 {
            return None;
        }
        let arrived = self.partitions.iter().all(|p| {
            image
                .topic(&p.topic)
                .and_then(|t| t.state(p.partition))
                .is_some_and(|s| s.replicas == p.target)
        });
        Some(if arrived {
            TaskState::Succeeded
        } else {
            TaskState::Cancelled
        })
    }
}

/// The active controller's check: records finishing the running tasks that are done.
pub fn finished(image: &MetadataImage, now_ms: i64) -> Vec<MetadataRecord> {
    image
        .tasks
        .values()
        .filter_map(|t| {
            let state = t.outcome(image)?;
            tracing::info!(task = t.id, ?state, description = %t.description, "background task finished");
            Some(MetadataRecord::TaskChanged(Task {
                state,
                finished_ms: Some(now_ms),
                ..t.clone()
            }))
        })
        .collect()
}

/// Applies a task record: keeps every running task and the newest finished ones.
pub fn apply(tasks: &mut BTreeMap<u64, Task>, task: &Task) {
    tasks.insert(task.id, task.clone());
    let finished: Vec<u64> = tasks
        .values()
        .filter(|t| t.state != TaskState::Running)
        .map(|t| t.id)
        .collect();
    for id in finished
        .iter()
        .take(finished.len().saturating_sub(FINISHED_KEPT))
    {
        tasks.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{PartitionState, TopicMeta};

    fn image_with(state: PartitionState) -> MetadataImage {
        let mut image = MetadataImage::default();
        image.topics.insert(
            "t".into(),
            TopicMeta {
                name: "t".into(),
                id: uuid::Uuid::nil(),
                placement: vec![0],
                partitions: vec![state],
                configs: BTreeMap::new(),
                internal: false,
            },
        );
        image
    }

    #[test]
    fn a_task_succeeds_on_its_target_and_is_cancelled_otherwise() {
        let target = vec![2, 3, 4];
        let task = Task::reassignment(
            7,
            vec![TaskPartition {
                topic: "t".into(),
                partition: 0,
                target: target.clone(),
            }],
            0,
        );
        let mut moving = PartitionState::new(vec![2, 3, 4, 1]);
        moving.adding = vec![4];
        moving.removing = vec![1];
        assert_eq!(task.outcome(&image_with(moving)), None);
        assert_eq!(
            task.outcome(&image_with(PartitionState::new(target))),
            Some(TaskState::Succeeded)
        );
        assert_eq!(
            task.outcome(&image_with(PartitionState::new(vec![1, 2, 3]))),
            Some(TaskState::Cancelled)
        );
    }

    #[test]
    fn only_the_newest_finished_tasks_are_kept() {
        let mut tasks = BTreeMap::new();
        apply(&mut tasks, &Task::reassignment(0, Vec::new(), 0));
        for id in 1..=(FINISHED_KEPT as u64 + 5) {
            let mut t = Task::reassignment(id, Vec::new(), 0);
            t.state = TaskState::Succeeded;
            apply(&mut tasks, &t);
        }
        assert_eq!(tasks.len(), FINISHED_KEPT + 1);
        assert!(tasks.contains_key(&0), "a running task is never dropped");
        assert!(!tasks.contains_key(&1));
    }
}
