;;; autostart.el --- The daemon is started when nothing answers  -*- lexical-binding: t; -*-

;;; Commentary:

;; No daemon runs: the first message starts `assistantd' on the default socket and
;; gets its answer.  That daemon is shut down; the next message starts a new one.

;;; Code:

(defun assistant-test-pid ()
  "The pid of the daemon that answers now."
  (let (pid)
    (assistant-rpc-request "daemon/status" nil
                           (lambda (_err result) (setq pid (plist-get result :pid))))
    (assistant-test-wait 10 (lambda () pid) "daemon/status")
    pid))

(assistant-test-run
 (lambda ()
   (assistant-test-put "socket" (assistant-rpc-socket-path))
   (let ((buf (assistant-chat)) (pids nil))
     (assistant-test-send buf "[[reply:started for you]] hi")
     (assistant-test-wait 30 (assistant-test-idle buf) "the first answer")
     (push (assistant-test-pid) pids)
     (let ((done nil))
       (assistant-rpc-request "daemon/shutdown" nil (lambda (&rest _) (setq done t)))
       (assistant-test-wait 10 (lambda () (and done (null assistant-rpc--conn)))
                            "the daemon to go"))
     (assistant-test-send buf "[[reply:back again]] still there?")
     (assistant-test-wait 30 (assistant-test-idle buf) "the second answer")
     (push (assistant-test-pid) pids)
     (assistant-test-put "pids" (vconcat (nreverse pids)))
     (assistant-test-put "lines" (assistant-test-lines buf)))))

;;; autostart.el ends here
